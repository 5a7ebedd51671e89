"""HTTP and websocket access to one worker ComfyUI, over its ordinary API.

This is the only module that catches aiohttp and asyncio errors: each becomes one of our
`WorkerUnavailable` errors, with a cause a user can act on ("connection refused", "no answer within
10s", "TLS certificate rejected"). Every request carries an explicit connect and read timeout, so a
frozen worker costs seconds, never minutes.

Each worker gets one keep-alive session (`ClientPool`) that carries its auth headers and TLS
settings, so a worker behind an authenticating proxy or a tunnel with a private certificate is
reached the same way on every request and on the websocket. Idempotent GETs are retried with
backoff when a pooled connection was dropped or a proxy answered 502/503/504; a refused connection
or a timeout is not retried, so an offline worker is still reported within one timeout. A result
stream (`result`) is never retried: the worker drops a result once it has sent all of it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import ssl
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any, BinaryIO
from urllib.parse import quote

import aiohttp
import numpy as np

from . import wire
from .errors import BadResult, WorkerLost, WorkerOffline, WorkerRejected, WorkerUnavailable
from .models import ImageRef, WorkerConfig, tls_warning

logger = logging.getLogger(__name__)

CONNECT_TIMEOUT = 5.0
READ_TIMEOUT = 15.0
TRANSFER_READ_TIMEOUT = 60.0
"""Between two chunks of a result download: a slow link is fine as long as bytes keep flowing."""
GET_RETRIES = 2
RETRY_BACKOFF_SECONDS = (0.25, 1.0)
RETRY_STATUSES = (502, 503, 504)
AUTH_HINT = "authentication required or refused; check this worker's auth token and headers"
"""What a tunnel or pod proxy answers while its upstream restarts or is briefly unreachable."""


@dataclass(frozen=True)
class Message:
    """One websocket message from a worker ComfyUI (`{"type": ..., "data": {...}}`)."""

    type: str
    data: dict[str, Any]


def _timeout(read: float = READ_TIMEOUT) -> aiohttp.ClientTimeout:
    return aiohttp.ClientTimeout(total=None, connect=CONNECT_TIMEOUT, sock_connect=CONNECT_TIMEOUT, sock_read=read)


@dataclass(frozen=True)
class QueueItem:
    """One prompt in a worker's queue."""

    prompt_id: str
    client_id: str | None
    """Who queued it: the client id sent with the prompt, if any."""


@dataclass(frozen=True)
class ResultTransfer:
    """One result pulled from a worker's results route, with what it cost on the wire."""

    array: np.ndarray
    wire_bytes: int
    seconds: float
    """From sending the request to the last byte decoded."""


class _CountedBody:
    """A response body that counts the bytes read through it (for the link's bandwidth)."""

    def __init__(self, content: aiohttp.StreamReader) -> None:
        self._content = content
        self.count = 0

    async def iter_chunked(self, n: int) -> AsyncIterator[bytes]:
        async for piece in self._content.iter_chunked(n):
            self.count += len(piece)
            yield piece


class _Retry(Exception):
    """Internal: a GET answer worth one more try (a proxy's 502/503/504)."""

    def __init__(self, status: int) -> None:
        self.status = status


class WorkerClient:
    """Talks to one worker. Cheap to create; the session (connection pool) is shared and owned elsewhere.

    `setup_error` is set when the worker's connection settings cannot be used (an unreadable CA
    bundle): every call then raises it, so the problem is reported like any other connection failure.
    """

    def __init__(self, worker: WorkerConfig, session: aiohttp.ClientSession | None, setup_error: WorkerUnavailable | None = None) -> None:
        self.worker = worker
        self._session = session
        self._setup_error = setup_error

    @property
    def name(self) -> str:
        return self.worker.name

    def url(self, path: str) -> str:
        return self.worker.base_url + path

    # --- plain requests -------------------------------------------------------------------

    async def get_json(self, path: str, read_timeout: float = READ_TIMEOUT, retries: int = GET_RETRIES) -> Any:
        status, body = await self._get(path, read_timeout=read_timeout, retries=retries)
        self._raise_for_auth(status, "GET", path)
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

    async def queue_items(self, read_timeout: float = READ_TIMEOUT) -> list[QueueItem]:
        """The prompts running or waiting on the worker (its GET /queue), with who queued them."""
        info = await self.get_json("/queue", read_timeout)
        if not isinstance(info, dict):
            raise BadResult(self.name, "GET /queue is not a JSON object")
        items = []
        for key in ("queue_running", "queue_pending"):
            # Each entry is ComfyUI's (number, prompt_id, prompt, extra_data, outputs_to_execute).
            for entry in info.get(key) or []:
                if isinstance(entry, list) and len(entry) > 1 and isinstance(entry[1], str):
                    extra = entry[3] if len(entry) > 3 and isinstance(entry[3], dict) else {}
                    client_id = extra.get("client_id")
                    items.append(QueueItem(entry[1], client_id if isinstance(client_id, str) else None))
        return items

    async def queued_prompt_ids(self, read_timeout: float = READ_TIMEOUT) -> set[str]:
        """Ids of the prompts running or waiting on the worker."""
        return {item.prompt_id for item in await self.queue_items(read_timeout)}

    async def object_info(self) -> dict[str, Any]:
        """Every node class the worker has, with its inputs and, for choice inputs, the choices."""
        info = await self.get_json("/object_info", READ_TIMEOUT)  # a frozen worker costs seconds here, not a minute
        if not isinstance(info, dict):
            raise BadResult(self.name, "GET /object_info is not a JSON object", stage="not_comfyui")
        return info

    async def submit(self, prompt: dict[str, Any], client_id: str) -> str:
        """Queues a prompt; WorkerRejected carries ComfyUI's reason (e.g. a node class it lacks)."""
        status, body = await self._request("POST", "/prompt", json_body={"prompt": prompt, "client_id": client_id})
        self._raise_for_auth(status, "POST", "/prompt")
        if status == 400:
            raise WorkerRejected(self.name, f"rejected the prompt: {describe_prompt_error(body)}")
        if status != 200:
            raise WorkerOffline(self.name, f"POST /prompt answered HTTP {status}")
        answer = self._parse_json(body, "/prompt")
        prompt_id = answer.get("prompt_id") if isinstance(answer, dict) else None
        if not isinstance(prompt_id, str):
            raise BadResult(self.name, "POST /prompt answered without a prompt_id")
        return prompt_id

    async def upload_input(self, file: BinaryIO, name: str, subfolder: str = "") -> str:
        """Stores a file in the worker's input folder; returns the name to use in the prompt.

        ComfyUI keeps an identical file under its name and renames a different one ("x (1).png"), so
        the returned name may differ from `name`.
        """
        form = aiohttp.FormData()
        form.add_field("image", file, filename=name, content_type="application/octet-stream")
        form.add_field("type", "input")
        form.add_field("subfolder", subfolder)
        status, body = await self._request("POST", "/upload/image", data=form, read_timeout=TRANSFER_READ_TIMEOUT)
        self._raise_for_auth(status, "POST", "/upload/image")
        if status != 200:
            raise WorkerRejected(self.name, f"refused the upload of input file {name} (HTTP {status})")
        answer = self._parse_json(body, "/upload/image")
        stored = answer.get("name") if isinstance(answer, dict) else None
        if not isinstance(stored, str) or not stored:
            raise BadResult(self.name, f"/upload/image answered without a file name for {name}")
        folder = answer.get("subfolder") or ""
        return str(PurePosixPath(folder, stored)) if folder else stored

    async def history(self, prompt_id: str, read_timeout: float = READ_TIMEOUT) -> dict[str, Any] | None:
        """The worker's history entry for a prompt, or None while it is not finished."""
        entries = await self.get_json(f"/history/{prompt_id}", read_timeout)
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
        status, body = await self._get("/view", params=params, read_timeout=TRANSFER_READ_TIMEOUT)
        self._raise_for_auth(status, "GET", "/view")
        if status != 200:
            raise BadResult(self.name, f"/view of {ref.filename} answered HTTP {status}")
        return body

    async def result(self, prompt_id: str, key: str, encoding: str, decoder: wire.Decoder) -> ResultTransfer:
        """Streams a result the worker's sink node stored, decoding it off the loop as it arrives.

        A body cut short (the worker died, a proxy gave up) is BadResult or WorkerLost, a corrupted
        one WireError (a BadResult): either way the share goes to another participant.
        """
        session = self._usable_session()
        path = f"/distributed/results/{quote(prompt_id, safe='')}/{quote(key, safe='')}"
        started = time.perf_counter()
        try:
            request = session.get(self.url(path), params={"encoding": encoding}, timeout=_timeout(TRANSFER_READ_TIMEOUT))
            async with request as response:
                self._raise_for_auth(response.status, "GET", path)
                if response.status == 404:
                    raise BadResult(self.name, f"holds no result for node {key} of prompt {prompt_id} (expired or fetched already)")
                if response.status != 200:
                    raise BadResult(self.name, f"GET {path} answered HTTP {response.status}")
                body = _CountedBody(response.content)
                array = await wire.read_stream(body, decoder)
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as error:
            raise _offline(self.name, error, TRANSFER_READ_TIMEOUT) from None
        return ResultTransfer(array, body.count, time.perf_counter() - started)

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
    async def events(self, client_id: str, heartbeat: float) -> AsyncIterator[EventStream]:
        """Opens the worker's /ws as `client_id` (with the worker's auth headers); yields its messages.

        The websocket pings every `heartbeat` seconds: a worker that is frozen or cut off stops
        answering and the stream raises WorkerLost, which is how a hang is told from a long node.
        Opening it again with the same `client_id` resumes the run's events (ComfyUI sends the
        current node to a client that reconnects).
        """
        session = self._usable_session()
        url = self.url("/ws") + f"?clientId={client_id}"
        try:
            ws = await session.ws_connect(
                url, heartbeat=heartbeat, autoping=True, timeout=aiohttp.ClientWSTimeout(ws_receive=None, ws_close=5.0)
            )
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as error:
            raise _offline(self.name, error) from None
        try:
            yield EventStream(self.name, ws)
        finally:
            await ws.close()

    # --- internals ------------------------------------------------------------------------

    async def _request(
        self,
        method: str,
        path: str,
        json_body: Any = None,
        data: Any = None,
        params: dict[str, str] | None = None,
        read_timeout: float = READ_TIMEOUT,
    ) -> tuple[int, bytes]:
        session = self._usable_session()
        try:
            request = session.request(
                method, self.url(path), json=json_body, data=data, params=params, timeout=_timeout(read_timeout)
            )
            async with request as response:
                return response.status, await response.read()
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as error:
            raise _offline(self.name, error, read_timeout) from None

    async def _get(self, path: str, params: dict[str, str] | None = None, read_timeout: float = READ_TIMEOUT,
                   retries: int = GET_RETRIES) -> tuple[int, bytes]:
        """A GET, tried again after a dropped keep-alive connection or a proxy's 502/503/504."""
        for attempt in range(retries + 1):
            try:
                status, body = await self._request("GET", path, params=params, read_timeout=read_timeout)
                if status in RETRY_STATUSES and attempt < retries:
                    raise _Retry(status)
                return status, body
            except (WorkerLost, _Retry) as error:
                if attempt >= retries:
                    raise
                cause = f"HTTP {error.status}" if isinstance(error, _Retry) else error.cause
                logger.debug("GET %s on %s failed (%s); retrying", path, self.name, cause)
                await asyncio.sleep(RETRY_BACKOFF_SECONDS[min(attempt, len(RETRY_BACKOFF_SECONDS) - 1)])
        raise AssertionError("unreachable")

    def _usable_session(self) -> aiohttp.ClientSession:
        if self._setup_error is not None or self._session is None:
            raise self._setup_error or WorkerOffline(self.name, "no connection settings")
        return self._session

    def _raise_for_auth(self, status: int, method: str, path: str) -> None:
        if status in (401, 403, 407):
            raise WorkerOffline(
                self.name,
                f"{method} {path} answered HTTP {status}: {AUTH_HINT}",
                stage="auth",
            )

    def _parse_json(self, body: bytes, path: str) -> Any:
        try:
            return json.loads(body)
        except ValueError:
            raise BadResult(self.name, f"{path} did not answer JSON; is this a ComfyUI server?", stage="not_comfyui") from None


class EventStream:
    """The messages of one open worker websocket."""

    def __init__(self, worker_name: str, ws: aiohttp.ClientWebSocketResponse) -> None:
        self._name = worker_name
        self._ws = ws

    async def receive(self, timeout: float | None = None) -> Message | None:
        """The next JSON message, or None when `timeout` seconds pass without one.

        Raises WorkerLost when the websocket closes, fails or misses its heartbeat.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                return None
            try:
                message = await self._ws.receive(timeout=left)
            except asyncio.TimeoutError:
                if self._ws.closed:
                    raise WorkerLost(self._name, "stopped answering websocket heartbeats") from None
                return None
            except (aiohttp.ClientError, OSError) as error:
                raise WorkerLost(self._name, f"websocket failed: {error or type(error).__name__}") from None
            if message.type == aiohttp.WSMsgType.TEXT:
                try:
                    payload = json.loads(message.data)
                except ValueError:
                    logger.debug("Ignoring a non-JSON websocket message from %s", self._name)
                    continue
                if isinstance(payload, dict) and isinstance(payload.get("type"), str):
                    data = payload.get("data")
                    return Message(payload["type"], data if isinstance(data, dict) else {})
            elif message.type == aiohttp.WSMsgType.BINARY:
                continue  # previews; not needed
            else:
                frozen = isinstance(self._ws.exception(), (asyncio.TimeoutError, aiohttp.ServerTimeoutError))
                raise WorkerLost(self._name, "stopped answering websocket heartbeats" if frozen else "closed its websocket")


def _offline(name: str, error: BaseException, read_timeout: float | None = None) -> WorkerUnavailable:
    """Maps a transport error to a cause a user can act on."""
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



def _connection_settings(worker: WorkerConfig) -> tuple:
    """What a worker's session is built from; a change of any of these builds a new session."""
    return (worker.auth_token, tuple(sorted(worker.headers.items())), worker.tls_verify, worker.tls_ca_file)


def _ssl_setting(worker: WorkerConfig) -> ssl.SSLContext | bool:
    """The TLS setting for aiohttp: system CAs plus the worker's bundle, or no verification at all."""
    if not worker.tls_verify:
        return False
    if worker.tls_ca_file is None:
        return True
    context = ssl.create_default_context()
    try:
        context.load_verify_locations(cafile=worker.tls_ca_file)
    except (OSError, ssl.SSLError) as error:
        raise WorkerOffline(worker.name, f"CA bundle {worker.tls_ca_file} could not be loaded ({error})", stage="tls") from None
    return context


def session_headers(worker: WorkerConfig) -> dict[str, str]:
    """Headers sent on every request and on the websocket: the custom ones, then the bearer token."""
    headers = dict(worker.headers)
    if worker.auth_token:
        headers["Authorization"] = f"Bearer {worker.auth_token}"
    return headers


@dataclass
class _PooledSession:
    settings: tuple
    session: aiohttp.ClientSession | None
    error: WorkerUnavailable | None


class ClientPool:
    """One keep-alive session per worker, built from its auth and TLS settings, closed with the application.

    A worker whose token, headers or TLS settings change gets a new session on its next request; the
    old one is closed in the background.
    """

    def __init__(self) -> None:
        self._pooled: dict[str, _PooledSession] = {}
        self._closing: set[asyncio.Task] = set()

    def client(self, worker: WorkerConfig) -> WorkerClient:
        pooled = self._pooled.get(worker.id)
        settings = _connection_settings(worker)
        if pooled is None or pooled.settings != settings or (pooled.session is not None and pooled.session.closed):
            if pooled is not None:
                self._close_later(pooled)
            pooled = self._build(worker, settings)
            self._pooled[worker.id] = pooled
        if pooled.session is None:
            return WorkerClient(worker, None, pooled.error)
        return WorkerClient(worker, pooled.session)

    async def forget(self, worker_id: str) -> None:
        pooled = self._pooled.pop(worker_id, None)
        if pooled is not None and pooled.session is not None:
            await pooled.session.close()

    async def close(self) -> None:
        pooled, self._pooled = list(self._pooled.values()), {}
        for entry in pooled:
            if entry.session is not None:
                await entry.session.close()
        await asyncio.gather(*self._closing, return_exceptions=True)

    def _build(self, worker: WorkerConfig, settings: tuple) -> _PooledSession:
        try:
            ssl_setting = _ssl_setting(worker)
        except WorkerOffline as error:
            logger.warning("Worker %s: %s", worker.name, error.cause)
            return _PooledSession(settings, None, error)
        warning = tls_warning(worker)
        if warning:
            logger.warning("Worker %s: %s", worker.name, warning)
        session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=16, ssl=ssl_setting), timeout=_timeout(), headers=session_headers(worker)
        )
        return _PooledSession(settings, session, None)

    def _close_later(self, pooled: _PooledSession) -> None:
        if pooled.session is None or pooled.session.closed:
            return
        task = asyncio.ensure_future(pooled.session.close())
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)
