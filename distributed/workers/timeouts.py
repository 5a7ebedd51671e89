"""How long the master waits for a worker: every request carries an explicit connect and read timeout,
so a frozen worker costs seconds, never minutes."""

from __future__ import annotations

import aiohttp

CONNECT_TIMEOUT = 5.0
READ_TIMEOUT = 15.0
TRANSFER_READ_TIMEOUT = 60.0
"""Between two chunks of a result download: a slow link is fine as long as bytes keep flowing."""


def client_timeout(read: float = READ_TIMEOUT) -> aiohttp.ClientTimeout:
    return aiohttp.ClientTimeout(total=None, connect=CONNECT_TIMEOUT, sock_connect=CONNECT_TIMEOUT, sock_read=read)
