"""How long the master waits for a worker: every request has a connect timeout, a read timeout (the
longest silence between two pieces) and a deadline for the whole answer, so a frozen worker costs
seconds and one that trickles bytes cannot hold a share or a health check for ever.

- An ordinary answer (JSON, a log) must be complete within ANSWER_DEADLINE_FACTOR read timeouts
  of the request: 60 s for most requests, 20 s for a health check.
- A transfer (a share's result, an image, an input file, the many megabytes of `/object_info`) may
  take longer on a slow link: it gets TRANSFER_GRACE_SECONDS plus its size at MIN_TRANSFER_RATE.
  The size is what the worker announced (its history entry, or the answer's Content-Length) and was
  checked against the limits, else the largest the limits allow; for an upload, the file's size.
"""

from __future__ import annotations

import aiohttp

CONNECT_TIMEOUT = 5.0
READ_TIMEOUT = 15.0
TRANSFER_READ_TIMEOUT = 60.0
"""Between two chunks of a result download: a slow link is fine as long as bytes keep flowing."""
ANSWER_DEADLINE_FACTOR = 4
TRANSFER_GRACE_SECONDS = 30.0
MIN_TRANSFER_RATE = 256 << 10
"""Bytes per second (2 Mbit/s): a link slower than this is not worth waiting for."""


def client_timeout(read: float = READ_TIMEOUT) -> aiohttp.ClientTimeout:
    """The connect and read timeouts; the deadline of the whole answer is kept by the client."""
    return aiohttp.ClientTimeout(total=None, connect=CONNECT_TIMEOUT, sock_connect=CONNECT_TIMEOUT, sock_read=read)


def answer_deadline(read: float = READ_TIMEOUT) -> float:
    """Seconds an ordinary answer may take in all, from the request to its last byte."""
    return read * ANSWER_DEADLINE_FACTOR


def transfer_deadline(size: int) -> float:
    """Seconds a transfer of `size` bytes may take in all."""
    return TRANSFER_GRACE_SECONDS + size / MIN_TRANSFER_RATE
