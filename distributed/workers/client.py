"""HTTP and websocket access to one worker ComfyUI, over its ordinary API.

Every aiohttp or asyncio error becomes one of our `WorkerUnavailable` errors here (`failures`), and
every request carries an explicit connect and read timeout and a deadline for the whole answer
(`timeouts`). The session, with the worker's auth headers and TLS settings, comes from the
`ClientPool`; it follows no redirect. Idempotent GETs are retried with backoff when a pooled
connection was dropped or a proxy answered 502/503/504; a refused connection or a timeout is not
retried, so an offline worker is still reported within one timeout. A result stream (`download`) is
never retried: the worker drops a result once it has sent all of it.

Nothing a worker sends is trusted: an answer larger than the master's limit (settings.max_answer_mib
for answers, the job's bounds for images) is refused as BadResult, and so is JSON that does not
parse, is nested too deep for Python, or does not have the shape ComfyUI gives it.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any, BinaryIO, Generic, TypeVar

import aiohttp

from ..config.models import DEFAULT_MAX_ANSWER_MIB, WorkerConfig
from ..errors import BadResult, WorkerLost, WorkerOffline, WorkerRejected, WorkerUnavailable
from .failures import AUTH_HINT, describe_prompt_error, parse_json, unavailable_from
from .stream import EventStream
from .timeouts import READ_TIMEOUT, TRANSFER_READ_TIMEOUT, answer_deadline, client_timeout, transfer_deadline

logger = logging.getLogger(__name__)

T = TypeVar("T")

GET_RETRIES = 2
RETRY_BACKOFF_SECONDS = (0.25, 1.0)
RETRY_STATUSES = (502, 503, 504)
"""What a tunnel or pod proxy answers while its upstream restarts or is briefly unreachable."""
IDENTITY_PATH = "/distributed/identity"
"""Served by every ComfyUI that runs this extension: `{"master_id": <id or null>}`."""
MAX_ID_LENGTH = 64
PROMPT_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,128}$")
"""What a prompt id from a worker may look like (ComfyUI makes uuid4s); it ends up in URL paths."""
READ_PIECE = 1 << 16
ANSWER_LIMIT_SETTING = "settings.max_answer_mib"


@dataclass(frozen=True)
class ImageRef:
    """Where a worker left one output image (its /view coordinates)."""

    filename: str
    subfolder: str
    type: str


@dataclass(frozen=True)
class QueueItem:
    """One prompt in a worker's queue."""

    prompt_id: str
    client_id: str | None
    """Who queued it: the client id sent with the prompt, if any."""


@dataclass(frozen=True)
class Download(Generic[T]):
    """What a streamed answer was turned into, with what it cost on the wire."""

    value: T
    wire_bytes: int
    seconds: float
    """From sending the request to the last byte consumed."""


class CountedBody:
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

    def __init__(self, worker: WorkerConfig, session: aiohttp.ClientSession | None, setup_error: WorkerUnavailable | None = None,
                 max_answer_bytes: int = DEFAULT_MAX_ANSWER_MIB << 20) -> None:
        self.worker = worker
        self._session = session
        self._setup_error = setup_error
        self._max_answer_bytes = max_answer_bytes

    @property
    def name(self) -> str:
        return self.worker.name

    @property
    def identity(self) -> str:
        """The worker by id and address, for what is remembered per worker: a re-pointed id is another worker."""
        return f"{self.worker.id}@{self.worker.base_url}"

    def url(self, path: str) -> str:
        return self.worker.base_url + path

    # --- plain requests -------------------------------------------------------------------

    async def get_json(self, path: str, read_timeout: float = READ_TIMEOUT, retries: int = GET_RETRIES, transfer: bool = False) -> Any:
        """A JSON answer; a `transfer` (a large answer) gets its deadline from the size it announces."""
        status, body = await self._get(path, read_timeout=read_timeout, retries=retries, transfer=transfer)
        self._raise_for_auth(status, "GET", path)
        if status != 200:
            stage = "not_comfyui" if status == 404 else "http"
            raise WorkerOffline(self.name, f"GET {path} answered HTTP {status}; is this a ComfyUI server?", stage=stage)
        return self._parse_json(body, path)

    async def system_stats(self, read_timeout: float = READ_TIMEOUT) -> dict[str, Any]:
        stats = await self.get_json("/system_stats", read_timeout)
        if not isinstance(stats, dict) or "system" not in stats:
            raise BadResult(self.name, "answers, but /system_stats does not look like ComfyUI", stage="not_comfyui")
        return stats

    async def queue_remaining(self, read_timeout: float = READ_TIMEOUT) -> int:
        info = await self.get_json("/prompt", read_timeout)
        try:
            return max(0, int(info["exec_info"]["queue_remaining"]))
        except (KeyError, TypeError, ValueError, OverflowError):
            raise BadResult(self.name, "GET /prompt does not look like ComfyUI", stage="not_comfyui") from None

    async def queue_items(self, read_timeout: float = READ_TIMEOUT) -> list[QueueItem]:
        """The prompts running or waiting on the worker (its GET /queue), with who queued them."""
        info = await self.get_json("/queue", read_timeout)
        if not isinstance(info, dict):
            raise BadResult(self.name, "GET /queue is not a JSON object")
        items = []
        for key in ("queue_running", "queue_pending"):
            entries = info.get(key) or []
            if not isinstance(entries, list):
                raise BadResult(self.name, f"GET /queue holds no list of {key}")
            # Each entry is ComfyUI's (number, prompt_id, prompt, extra_data, outputs_to_execute).
            for entry in entries:
                if isinstance(entry, list) and len(entry) > 1 and isinstance(entry[1], str):
                    extra = entry[3] if len(entry) > 3 and isinstance(entry[3], dict) else {}
                    client_id = extra.get("client_id")
                    items.append(QueueItem(entry[1], client_id if isinstance(client_id, str) else None))
        return items

    async def queued_prompt_ids(self, read_timeout: float = READ_TIMEOUT) -> set[str]:
        """Ids of the prompts running or waiting on the worker."""
        return {item.prompt_id for item in await self.queue_items(read_timeout)}

    async def master_id(self, read_timeout: float = READ_TIMEOUT) -> str | None:
        """The id of the master this address is, when it runs this extension as a master; None for a
        stock ComfyUI, a worker, an error or any answer that is not such an id."""
        try:
            status, body = await self._get(IDENTITY_PATH, read_timeout=read_timeout, retries=0)
        except WorkerUnavailable:
            return None
        if status != 200:
            return None
        try:
            answer = parse_json(body)
        except ValueError:
            return None
        value = answer.get("master_id") if isinstance(answer, dict) else None
        return value if isinstance(value, str) and 0 < len(value) <= MAX_ID_LENGTH else None

    async def object_info(self) -> dict[str, Any]:
        """Every node class the worker has, with its inputs and, for choice inputs, the choices."""
        # A frozen worker costs seconds here, not a minute; an answer of many megabytes on a slow link has time.
        info = await self.get_json("/object_info", READ_TIMEOUT, transfer=True)
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
        if not isinstance(prompt_id, str) or not PROMPT_ID.match(prompt_id):
            raise BadResult(self.name, "POST /prompt answered without a valid prompt_id")
        return prompt_id

    async def upload_input(self, file: BinaryIO, name: str, subfolder: str, size: int) -> str:
        """Stores a file (of `size` bytes) in the worker's input folder; returns the name to use in the prompt.

        ComfyUI keeps an identical file under its name and renames a different one ("x (1).png"), so
        the returned name may differ from `name`.
        """
        form = aiohttp.FormData()
        form.add_field("image", file, filename=name, content_type="application/octet-stream")
        form.add_field("type", "input")
        form.add_field("subfolder", subfolder)
        status, body = await self._request("POST", "/upload/image", data=form, read_timeout=TRANSFER_READ_TIMEOUT,
                                           deadline=transfer_deadline(size))
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
        for key in ("status", "outputs"):
            if entry.get(key) is not None and not isinstance(entry[key], dict):
                raise BadResult(self.name, f"/history/{prompt_id} holds a malformed {key}")
        return entry

    async def view(self, ref: ImageRef, max_bytes: int, limit_setting: str) -> bytes:
        """One image file; refused when larger than `max_bytes` (what `limit_setting` allows)."""
        params = {"filename": ref.filename, "subfolder": ref.subfolder, "type": ref.type}
        status, body = await self._get("/view", params=params, read_timeout=TRANSFER_READ_TIMEOUT, limit=max_bytes,
                                       limit_setting=limit_setting, transfer=True)
        self._raise_for_auth(status, "GET", "/view")
        if status != 200:
            raise BadResult(self.name, f"/view of {ref.filename} answered HTTP {status}")
        return body

    async def download(self, path: str, consume: Callable[[CountedBody], Awaitable[T]], size: int,
                       params: dict[str, str] | None = None, not_found: str | None = None) -> Download[T]:
        """Streams a GET answer's body into `consume` (a decoder that works as chunks arrive); `size`,
        the bytes the worker announced, sets its deadline.

        Never retried: the worker drops a result once it has sent all of it. A body cut short (the
        worker died, a proxy gave up) is BadResult or WorkerLost; whatever `consume` raises (a
        corrupted stream) passes through. Either way the share goes to another participant.
        """
        session = self._usable_session()
        started = time.perf_counter()
        seconds = transfer_deadline(size)
        scope = asyncio.timeout(seconds)
        try:
            async with scope:
                async with session.get(self.url(path), params=params, timeout=client_timeout(TRANSFER_READ_TIMEOUT)) as response:
                    self._raise_for_auth(response.status, "GET", path)
                    if response.status == 404 and not_found:
                        raise BadResult(self.name, not_found)
                    if response.status != 200:
                        raise BadResult(self.name, f"GET {path} answered HTTP {response.status}")
                    body = CountedBody(response.content)
                    value = await consume(body)
        except (TimeoutError, aiohttp.ClientError, OSError) as error:
            raise self._late(scope, "GET", path, seconds) or unavailable_from(self.name, error, TRANSFER_READ_TIMEOUT) from None
        return Download(value, body.count, time.perf_counter() - started)

    async def send(self, method: str, path: str, *, params: dict[str, str] | None = None, json_body: Any = None,
                   data: Any = None, read_timeout: float = READ_TIMEOUT, data_size: int = 0) -> tuple[int, Any]:
        """One request to a route of this extension on the other side (a worker's model store, a
        host's /distributed routes): (status, its JSON answer or None). The caller reads the status.

        A GET is retried as `get_json`'s are; nothing else is (a chunk of a model copy must not be
        sent twice by accident). A body of `data_size` bytes gets a deadline that allows for it (a
        chunk of a model file on a slow link). A refused token or proxy login raises WorkerOffline
        like every other call.
        """
        if method == "GET":
            status, body = await self._get(path, params=params, read_timeout=read_timeout)
        else:
            deadline = transfer_deadline(data_size) if data_size else None
            status, body = await self._request(method, path, json_body=json_body, data=data, params=params,
                                               read_timeout=read_timeout, deadline=deadline)
        try:
            return status, parse_json(body) if body else None
        except ValueError:
            return status, None

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
        seconds = answer_deadline()
        scope = asyncio.timeout(seconds)
        try:
            async with scope:
                ws = await session.ws_connect(
                    url, heartbeat=heartbeat, autoping=True, timeout=aiohttp.ClientWSTimeout(ws_receive=None, ws_close=5.0)
                )
        except (TimeoutError, aiohttp.ClientError, OSError) as error:
            raise self._late(scope, "GET", "/ws", seconds) or unavailable_from(self.name, error) from None
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
        deadline: float | None = None,
        limit: int | None = None,
        limit_setting: str = ANSWER_LIMIT_SETTING,
        transfer: bool = False,
    ) -> tuple[int, bytes]:
        """One request and its whole answer: at most `limit` bytes (the answer cap by default), within
        `deadline` seconds (the answer deadline of `read_timeout` by default). A `transfer` gets its
        deadline from the size its answer announces, once the headers are in."""
        session = self._usable_session()
        limit = self._max_answer_bytes if limit is None else limit
        seconds = answer_deadline(read_timeout) if deadline is None else deadline
        scope = asyncio.timeout(seconds)
        try:
            async with scope:
                request = session.request(
                    method, self.url(path), json=json_body, data=data, params=params, timeout=client_timeout(read_timeout)
                )
                async with request as response:
                    if transfer:
                        seconds = transfer_deadline(min(response.content_length or limit, limit))
                        scope.reschedule(asyncio.get_running_loop().time() + seconds)
                    return response.status, await self._read_body(response, method, path, limit, limit_setting)
        except (TimeoutError, aiohttp.ClientError, OSError) as error:
            raise self._late(scope, method, path, seconds) or unavailable_from(self.name, error, read_timeout) from None

    async def _read_body(self, response: aiohttp.ClientResponse, method: str, path: str, limit: int, limit_setting: str) -> bytes:
        """The answer's body, refused as soon as it is known to exceed `limit` bytes."""
        if response.content_length is not None and response.content_length > limit:
            raise self._too_large(method, path, limit, limit_setting)
        body = bytearray()
        async for piece in response.content.iter_chunked(READ_PIECE):
            body += piece
            if len(body) > limit:
                raise self._too_large(method, path, limit, limit_setting)
        return bytes(body)

    def _too_large(self, method: str, path: str, limit: int, limit_setting: str) -> BadResult:
        return BadResult(self.name, f"{method} {path} answered more than {limit / (1 << 20):g} MiB, the limit ({limit_setting})")

    def _late(self, scope: asyncio.Timeout, method: str, path: str, seconds: float) -> WorkerOffline | None:
        """The error for an answer that missed its deadline, if that is what ended it."""
        if not scope.expired():
            return None
        return WorkerOffline(self.name, f"{method} {path} was not answered in full within {seconds:.0f}s", stage="timeout")

    async def _get(self, path: str, params: dict[str, str] | None = None, read_timeout: float = READ_TIMEOUT,
                   retries: int = GET_RETRIES, **limits: Any) -> tuple[int, bytes]:
        """A GET, tried again after a dropped keep-alive connection or a proxy's 502/503/504."""
        for attempt in range(retries + 1):
            try:
                status, body = await self._request("GET", path, params=params, read_timeout=read_timeout, **limits)
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
            return parse_json(body)
        except ValueError as error:
            raise BadResult(self.name, f"{path} did not answer usable JSON ({error}); is this a ComfyUI server?",
                            stage="not_comfyui") from None
