"""HTTP and websocket access to one worker ComfyUI, over its ordinary API.

This is the only module that catches aiohttp and asyncio errors: each becomes one of our
`WorkerUnavailable` errors, with a cause a user can act on ("connection refused", "no answer within
10s"). Every request carries an explicit connect and read timeout, so a frozen worker costs seconds,
never minutes.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import aiohttp

from .errors import BadResult, WorkerLost, WorkerOffline, WorkerRejected, WorkerUnavailable
from .models import ImageRef, WorkerConfig

logger = logging.getLogger(__name__)

CONNECT_TIMEOUT = 5.0
READ_TIMEOUT = 15.0
TRANSFER_READ_TIMEOUT = 60.0
"""Between two chunks of a result download: a slow link is fine as long as bytes keep flowing."""


@dataclass(frozen=True)
class Message:
    """One websocket message from a worker ComfyUI (`{"type": ..., "data": {...}}`)."""

    type: str
    data: dict[str, Any]


def _timeout(read: float = READ_TIMEOUT) -> aiohttp.ClientTimeout:
    return aiohttp.ClientTimeout(total=None, connect=CONNECT_TIMEOUT, sock_connect=CONNECT_TIMEOUT, sock_read=read)


class WorkerClient:
    """Talks to one worker. Cheap to create; the session (connection pool) is shared and owned elsewhere."""

    def __init__(self, worker: WorkerConfig, session: aiohttp.ClientSession) -> None:
        self.worker = worker
        self._session = session

    @property
    def name(self) -> str:
        return self.worker.name

    def url(self, path: str) -> str:
        return self.worker.base_url + path

    # --- plain requests -------------------------------------------------------------------

    async def get_json(self, path: str, read_timeout: float = READ_TIMEOUT) -> Any:
        status, body = await self._request("GET", path, read_timeout=read_timeout)
        if status in (401, 403):
            raise WorkerOffline(self.name, f"GET {path} answered HTTP {status}: authentication required or refused", stage="auth")
        if status != 200:
            stage = "not_comfyui" if status == 404 else "http"
            raise WorkerOffline(self.name, f"GET {path} answered HTTP {status}; is this a ComfyUI server?", stage=stage)
        return self._parse_json(body, path)

    async def system_stats(self, read_timeout: float = READ_TIMEOUT) -> dict[str, Any]:
        stats = await self.get_json("/system_stats", read_timeout)
        if not isinstance(stats, dict) or "system" not in stats:
            raise WorkerOffline(self.name, "answers, but /system_stats does not look like ComfyUI", stage="not_comfyui")
        return stats

    async def queue_remaining(self, read_timeout: float = READ_TIMEOUT) -> int:
        info = await self.get_json("/prompt", read_timeout)
        try:
            return int(info["exec_info"]["queue_remaining"])
        except (KeyError, TypeError, ValueError):
            raise WorkerOffline(self.name, "GET /prompt does not look like ComfyUI") from None

    async def submit(self, prompt: dict[str, Any], client_id: str) -> str:
        """Queues a prompt; WorkerRejected carries ComfyUI's reason (e.g. a node class it lacks)."""
        status, body = await self._request("POST", "/prompt", json_body={"prompt": prompt, "client_id": client_id})
        if status == 400:
            raise WorkerRejected(self.name, f"rejected the prompt: {describe_prompt_error(body)}")
        if status != 200:
            raise WorkerOffline(self.name, f"POST /prompt answered HTTP {status}")
        answer = self._parse_json(body, "/prompt")
        prompt_id = answer.get("prompt_id") if isinstance(answer, dict) else None
        if not isinstance(prompt_id, str):
            raise BadResult(self.name, "POST /prompt answered without a prompt_id")
        return prompt_id

    async def history(self, prompt_id: str) -> dict[str, Any] | None:
        """The worker's history entry for a prompt, or None while it is not finished."""
        entries = await self.get_json(f"/history/{prompt_id}")
        if not isinstance(entries, dict):
            raise BadResult(self.name, f"/history/{prompt_id} is not a JSON object")
        entry = entries.get(prompt_id)
        if entry is None:
            return None
        if not isinstance(entry, dict):
            raise BadResult(self.name, f"/history/{prompt_id} holds no valid entry")
        return entry

    async def view(self, ref: ImageRef) -> bytes:
        params = {"filename": ref.filename, "subfolder": ref.subfolder, "type": ref.type}
        status, body = await self._request("GET", "/view", params=params, read_timeout=TRANSFER_READ_TIMEOUT)
        if status != 200:
            raise BadResult(self.name, f"/view of {ref.filename} answered HTTP {status}")
        return body

    async def cancel(self, prompt_id: str) -> None:
        """Removes a prompt from the worker's queue and stops it if running; best effort."""
        for path, body in (("/queue", {"delete": [prompt_id]}), ("/interrupt", {"prompt_id": prompt_id})):
            try:
                await self._request("POST", path, json_body=body, read_timeout=5.0)
            except WorkerUnavailable as error:
                logger.debug("Cancelling %s on %s: %s", prompt_id, self.name, error)
                return

    # --- websocket ------------------------------------------------------------------------

    @asynccontextmanager
    async def events(self, client_id: str, heartbeat: float) -> AsyncIterator[AsyncIterator[Message]]:
        """Opens the worker's /ws as `client_id`; yields an iterator of its JSON messages.

        The websocket pings every `heartbeat` seconds: a worker that is frozen or cut off stops
        answering and the iterator raises WorkerLost, which is how a hang is told from a long node.
        """
        url = self.url("/ws") + f"?clientId={client_id}"
        try:
            ws = await self._session.ws_connect(
                url, heartbeat=heartbeat, autoping=True, timeout=aiohttp.ClientWSTimeout(ws_receive=None, ws_close=5.0)
            )
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as error:
            raise _offline(self.name, error) from None
        try:
            yield self._messages(ws)
        finally:
            await ws.close()

    async def _messages(self, ws: aiohttp.ClientWebSocketResponse) -> AsyncIterator[Message]:
        while True:
            try:
                message = await ws.receive()
            except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as error:
                raise WorkerLost(self.name, f"websocket failed: {error or type(error).__name__}") from None
            if message.type == aiohttp.WSMsgType.TEXT:
                try:
                    payload = json.loads(message.data)
                except ValueError:
                    logger.debug("Ignoring a non-JSON websocket message from %s", self.name)
                    continue
                if isinstance(payload, dict) and isinstance(payload.get("type"), str):
                    data = payload.get("data")
                    yield Message(payload["type"], data if isinstance(data, dict) else {})
            elif message.type == aiohttp.WSMsgType.BINARY:
                continue  # previews; not needed
            else:
                frozen = isinstance(ws.exception(), (asyncio.TimeoutError, aiohttp.ServerTimeoutError))
                raise WorkerLost(self.name, "stopped answering websocket heartbeats" if frozen else "closed its websocket")

    # --- internals ------------------------------------------------------------------------

    async def _request(
        self,
        method: str,
        path: str,
        json_body: Any = None,
        params: dict[str, str] | None = None,
        read_timeout: float = READ_TIMEOUT,
    ) -> tuple[int, bytes]:
        try:
            request = self._session.request(method, self.url(path), json=json_body, params=params, timeout=_timeout(read_timeout))
            async with request as response:
                return response.status, await response.read()
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as error:
            raise _offline(self.name, error, read_timeout) from None

    def _parse_json(self, body: bytes, path: str) -> Any:
        try:
            return json.loads(body)
        except ValueError:
            raise BadResult(self.name, f"{path} did not answer JSON; is this a ComfyUI server?", stage="not_comfyui") from None


def _offline(name: str, error: BaseException, read_timeout: float | None = None) -> WorkerUnavailable:
    """Maps a transport error to a cause a user can act on."""
    if isinstance(error, (aiohttp.ClientConnectorCertificateError, aiohttp.ClientSSLError, ssl.SSLError)):
        return WorkerOffline(name, f"TLS problem: {error}", stage="tls")
    if isinstance(error, aiohttp.ClientConnectorDNSError) or isinstance(getattr(error, "os_error", None), socket.gaierror):
        return WorkerOffline(name, "host name could not be resolved (DNS)", stage="dns")
    if isinstance(error, aiohttp.ClientConnectorError):
        detail = error.os_error.strerror or error.os_error
        return WorkerOffline(name, f"connection refused or unreachable ({detail})", stage="refused")
    if isinstance(error, (asyncio.TimeoutError, aiohttp.ServerTimeoutError)):
        if isinstance(error, aiohttp.ConnectionTimeoutError):
            return WorkerOffline(name, f"no connection within {CONNECT_TIMEOUT:.0f}s", stage="timeout")
        return WorkerOffline(name, f"no answer within {read_timeout or READ_TIMEOUT:.0f}s", stage="timeout")
    if isinstance(error, aiohttp.ServerDisconnectedError):
        return WorkerLost(name, "dropped the connection")
    if isinstance(error, aiohttp.ClientPayloadError):
        return BadResult(name, f"sent a truncated answer ({error})")
    return WorkerOffline(name, f"{type(error).__name__}: {error}")


def describe_prompt_error(body: bytes) -> str:
    """ComfyUI's 400 answer to /prompt, as one readable line naming the failing nodes."""
    try:
        answer = json.loads(body)
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



class ClientPool:
    """One keep-alive session per worker, created on first use and closed with the application."""

    def __init__(self) -> None:
        self._sessions: dict[str, aiohttp.ClientSession] = {}

    def client(self, worker: WorkerConfig) -> WorkerClient:
        session = self._sessions.get(worker.id)
        if session is None or session.closed:
            session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=16), timeout=_timeout())
            self._sessions[worker.id] = session
        return WorkerClient(worker, session)

    async def forget(self, worker_id: str) -> None:
        session = self._sessions.pop(worker_id, None)
        if session is not None:
            await session.close()

    async def close(self) -> None:
        sessions, self._sessions = list(self._sessions.values()), {}
        for session in sessions:
            await session.close()
