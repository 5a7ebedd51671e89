"""What went wrong with a worker, in words a user can act on.

The worker client is the only code that catches aiohttp and asyncio errors; it hands each one to
`unavailable_from`, which turns it into one of our `WorkerUnavailable` errors with a cause such as
"connection refused", "no answer within 10s" or "TLS certificate rejected". ComfyUI's own error
answers (a refused prompt, an execution error) are described here too.
"""

from __future__ import annotations

import asyncio
import json
import socket
import ssl
from typing import Any

import aiohttp

from ..errors import BadResult, WorkerLost, WorkerOffline, WorkerUnavailable
from .timeouts import CONNECT_TIMEOUT, READ_TIMEOUT

AUTH_HINT = "authentication required or refused; check this worker's auth token and headers"


class RedirectRefused(aiohttp.ClientError):
    """Raised (by the pool's sessions) instead of following a redirect from a worker: the request's
    secrets (custom headers, which aiohttp keeps on a redirect to another host) stay with the worker's
    own address. ComfyUI's API never redirects."""

    def __init__(self, status: int, location: str) -> None:
        super().__init__(f"HTTP {status} redirect to {location[:200]}")
        self.status = status
        self.location = location[:200]


def unavailable_from(name: str, error: BaseException, read_timeout: float | None = None) -> WorkerUnavailable:
    """Maps a transport error to a cause a user can act on."""
    if isinstance(error, RedirectRefused):
        return WorkerOffline(
            name,
            f"answered with a redirect (HTTP {error.status}) to {error.location}; the master follows no redirects: "
            "set the worker's address to the one it redirects to",
            stage="http",
        )
    if isinstance(error, aiohttp.ClientConnectorCertificateError):
        reason = getattr(error.certificate_error, "verify_message", None) or str(error.certificate_error)
        return WorkerOffline(
            name,
            f"TLS certificate rejected ({reason}); for a self-signed or private certificate set this worker's CA bundle (tls_ca_file)",
            stage="tls",
        )
    if isinstance(error, (aiohttp.ClientSSLError, ssl.SSLError)):
        return WorkerOffline(name, f"TLS problem: {error}", stage="tls")
    if isinstance(error, aiohttp.WSServerHandshakeError):
        if error.status in (401, 403, 407):
            return WorkerOffline(name, f"websocket refused with HTTP {error.status}: {AUTH_HINT}", stage="auth")
        return WorkerOffline(name, f"websocket refused with HTTP {error.status} (a proxy that does not pass websockets?)")
    if isinstance(error, aiohttp.ClientConnectorDNSError) or isinstance(getattr(error, "os_error", None), socket.gaierror):
        return WorkerOffline(name, "host name could not be resolved (DNS)", stage="dns")
    if isinstance(error, aiohttp.ClientConnectorError):
        detail = error.os_error.strerror or error.os_error
        return WorkerOffline(name, f"connection refused or unreachable ({detail})", stage="refused")
    if isinstance(error, (asyncio.TimeoutError, aiohttp.ServerTimeoutError)):
        if isinstance(error, aiohttp.ConnectionTimeoutError):
            return WorkerOffline(name, f"no connection within {CONNECT_TIMEOUT:.0f}s", stage="timeout")
        return WorkerOffline(name, f"no answer within {read_timeout or READ_TIMEOUT:.0f}s", stage="timeout")
    if isinstance(error, (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError)):
        return WorkerLost(name, "dropped the connection")
    if isinstance(error, aiohttp.ClientPayloadError):
        return BadResult(name, f"sent a truncated answer ({error})")
    return WorkerOffline(name, f"{type(error).__name__}: {error}")


def parse_json(text: bytes | str) -> Any:
    """JSON a worker sent. Raises ValueError for anything that is not JSON, also for nesting too deep
    for Python's parser (which raises RecursionError, an error no caller expects)."""
    try:
        return json.loads(text)
    except RecursionError:
        raise ValueError("nested too deep") from None


def describe_prompt_error(body: bytes) -> str:
    """ComfyUI's 400 answer to /prompt, as one readable line naming the failing nodes."""
    try:
        answer = parse_json(body)
    except ValueError:
        return body[:200].decode(errors="replace")
    if not isinstance(answer, dict):
        return str(answer)[:200]
    error = answer.get("error")
    parts = [error.get("message", "") if isinstance(error, dict) else str(error or "")]
    node_errors = answer.get("node_errors")
    if isinstance(node_errors, dict):
        for node_id, details in node_errors.items():
            if not isinstance(details, dict):
                continue
            messages = "; ".join(
                str(e.get("details") or e.get("message")) for e in details.get("errors", []) if isinstance(e, dict)
            )
            parts.append(f"node {node_id} ({details.get('class_type', '?')}): {messages}")
    if isinstance(error, dict) and error.get("details") and not isinstance(node_errors, dict):
        parts.append(str(error["details"]))
    return " | ".join(part for part in parts if part)[:1000]


def describe_execution_error(data: dict[str, Any]) -> str:
    """A worker's `execution_error` event as one line."""
    node = data.get("node_id")
    node_type = data.get("node_type")
    message = data.get("exception_message") or data.get("exception_type") or "execution error"
    where = f"node {node} ({node_type})" if node else "execution"
    return f"{where} failed: {str(message).strip()}"
