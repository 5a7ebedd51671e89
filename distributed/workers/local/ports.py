"""Whether a port on this machine is free for a worker to bind, and the next one that is."""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Collection

from .command import DEFAULT_LISTEN

LAST_PORT = 65535


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


def next_free_port(start: int, taken: Collection[int], is_free: Callable[[int], bool] = port_is_free) -> int | None:
    """The first port from `start` up that is neither `taken` (named in the registry, the master's)
    nor in use on this machine; None when none is left."""
    port = start
    while port in taken or not is_free(port):
        port += 1
        if port > LAST_PORT:
            return None
    return port
