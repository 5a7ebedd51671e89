"""Whether a port on this machine is free for a worker to bind."""

from __future__ import annotations

import os
import socket

from .command import DEFAULT_LISTEN


def port_is_free(port: int, host: str = DEFAULT_LISTEN) -> bool:
    """Whether a server could bind `host:port` now (binds and releases a socket; blocking but short)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        if os.name != "nt":
            # As aiohttp does: a port left in TIME_WAIT by a worker that just stopped is still usable.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True
