"""Runs one share on one worker: prepare, open its websocket, queue the prompt, watch, fetch the results.

Preparing comes first: the worker's `/object_info` (cached a short while) tells which input files to
upload (`media`) and whether it has every node class and model file the prompt names (`preflight`);
a worker that lacks one is refused with WorkerRejected naming them, before anything is queued.

The websocket is opened with our own client id before the prompt is queued, so no event of the run
can be missed; ComfyUI sends progress only to the client that queued the prompt. Its heartbeat tells
a frozen or cut-off worker from a long-running node. When the websocket drops while the worker still
answers HTTP (a proxy or tunnel closing idle or long connections), the share is not given up: the
worker's `/history` and `/queue` say whether the prompt finished or is still there, and the websocket
is reopened with the same client id. While the websocket is quiet, `/history` is checked now and then,
so a finish whose event was lost is still noticed. Whatever ends a share early (an error, the job
being cancelled, an interrupt on the master), the prompt is removed from the worker in the background.

A worker's server keeps answering (heartbeats included) while its execution thread is stuck inside a
node, so the heartbeat cannot tell a hung node from a long one. The share's own events can: a share
that shows no execution or progress event for `stall_timeout` seconds raises WorkerStalled. While it
still waits in the worker's queue, the worker's activity counts instead: events of this master's
other shares there, or its queue moving.

It serves stock workers and workers that run this extension alike. A worker whose `/object_info`
lists this extension's sink node gets the fast result path (`sink`, `fetch`): the share ends in the
sink instead of PreviewImage, and its arrays are streamed in the wire format, uint8 or unquantised
floats, in the encoding its link calls for. Any other worker keeps the stock PNG path; both kinds
serve shares of the same job. Images the master holds in memory (upscale tiles) go the same two
ways: as pixels to a worker that lists this extension's input node, as PNGs to any other
(`input_images`).

What the worker says is not trusted: its history entry counts only if it holds the client id this
share was queued with, and its results must fit the `ResultLimits` of the job and the settings
(`limits`) before anything is fetched or decoded.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config.models import WorkerConfig
from ..config.registry import Registry
from ..errors import BadResult, WorkerFailed, WorkerLost, WorkerRejected, WorkerStalled, WorkerUnavailable
from ..graph import Prompt
from ..shares import PRECISIONS, InputImage, NodeCount, ShareProgress, ShareResult, ShareWork
from ..workers.client import WorkerClient
from ..workers.failures import describe_execution_error
from ..workers.orphans import ShareOwner
from ..workers.pool import ClientPool
from ..workers.stream import EventStream
from . import fetch, input_images, preflight, sink
from .limits import ResultLimits
from .link import LinkMonitor
from .media import MediaUploader
from .object_info import ObjectInfoCache

logger = logging.getLogger(__name__)

HISTORY_SETTLE_SECONDS = 10.0
QUIET_CHECK_SECONDS = 5.0
"""A websocket silent this long has `/history` checked, in case the finish event was lost."""
MAX_RECONNECTS = 5
RECONNECT_BACKOFF_SECONDS = 0.5

ProgressCallback = Callable[[ShareProgress], None]
MAX_CACHED_NODES = 10_000


@dataclass
class _Watch:
    """What one share's events have shown, kept across websocket reconnects."""

    prompt_id: str
    node_ids: frozenset[str]
    """The share prompt's nodes: only these are taken from the worker's cache reports."""
    stall_seconds: float
    last_event: float
    """When the share (or, while it waits in the queue, the worker) last showed activity."""
    count: NodeCount
    """The share's nodes done so far, for its progress."""
    started: bool = False
    node: str | None = None
    cached: set[str] = field(default_factory=set)

    def stalled(self, now: float, worker_activity: float) -> bool:
        latest = self.last_event if self.started else max(self.last_event, worker_activity)
        return now - latest >= self.stall_seconds

    def stall_error(self, worker_name: str) -> WorkerStalled:
        where = f", stuck in node {self.node}" if self.started and self.node else ("" if self.started else ", still waiting in its queue")
        return WorkerStalled(worker_name, f"showed no progress for {self.stall_seconds:g} s (stall_timeout){where}")


def queued_by(entry: dict[str, Any]) -> str | None:
    """The client id a history entry's prompt was queued with. ComfyUI keeps the queue item as
    `prompt`: (number, prompt_id, prompt, extra_data, outputs_to_execute); extra_data has client_id."""
    item = entry.get("prompt")
    extra = item[3] if isinstance(item, list) and len(item) > 3 else None
    client_id = extra.get("client_id") if isinstance(extra, dict) else None
    return client_id if isinstance(client_id, str) else None


class ShareRunner:
    """Runs shares on workers; holds per-worker caches and the background cancellations it sends.

    `owner` names this master and its run in every share's client id, so that a restarted master
    can find the shares it left behind (`orphans`). `input_dir` is the master's input folder; without
    it, input files are left to the worker's own.
    """

    def __init__(self, registry: Registry, clients: ClientPool, owner: ShareOwner, input_dir: Path | None = None) -> None:
        self._registry = registry
        self._clients = clients
        self._owner = owner
        self._object_info = ObjectInfoCache()
        self._input_dir = input_dir
        self._media = MediaUploader(input_dir)
        self._png_writes: dict[str, asyncio.Future[None]] = {}
        """Tile PNGs being written (by file), for the share that needs them or ahead of the next ones."""
        self._pixels_refused: set[str] = set()
        """Workers (id@address) whose inputs route refused pixels: they get PNGs."""
        self._cleanups: set[asyncio.Task] = set()
        """Cancellations sent to workers in the background, so a frozen worker never holds up a job."""
        self._activity: dict[str, float] = {}
        """worker id -> when one of this master's shares there last showed an event."""
        self.links = LinkMonitor()

    def link_report(self) -> dict[str, dict[str, Any]]:
        """worker_id -> {"encoding", "reason", "bandwidth_bytes_per_s"} for fast-path workers fetched from."""
        return self.links.report()

    async def run(self, work: ShareWork, worker: WorkerConfig, share_index: int, on_progress: ProgressCallback) -> ShareResult:
        """Queues a share's prompt on a worker, watches it, and fetches its output per collector.

        Images travel from a worker with this extension in the precision `work` asks for (uint8 when
        not said); stock workers always send PNG, and cannot send audio.
        """
        client = self._clients.client(worker)
        prompt = work.prompt
        collector_ids = work.collector_ids
        fast = await self.has_fast_path(client)
        if work.audio_ids and not fast:
            raise WorkerRejected(client.name, "returns audio only when it runs ComfyUI Distributed GPU too (it lacks "
                                              f"{sink.SINK_CLASS}); install the extension on it to give it audio shares")
        if fast:
            dtype = max((work.precisions.get(node_id, sink.DEFAULT_PRECISION) for node_id in collector_ids), key=PRECISIONS.index)
            prompt = sink.sink_prompt(prompt, collector_ids, work.precisions, self.links.choose(client.worker.id, dtype))
        prompt = await self._with_inputs(prompt, work, client)
        client_id = self._owner.client_id(share_index)
        settings = self._registry.snapshot().settings
        heartbeat = max(1.0, settings.worker_timeout / 2)
        limits = {node_id: ResultLimits.of(work, node_id, settings) for node_id in collector_ids}
        prompt_id: str | None = None
        try:
            async with client.events(client_id, heartbeat) as stream:
                prompt_id = await client.submit(prompt, client_id)
                watch = _Watch(prompt_id, frozenset(prompt), settings.stall_timeout, time.monotonic(), NodeCount(prompt))
                finished = await self._watch_or_drop(client, stream, watch, on_progress)
            reconnects = 0
            while finished is not None:
                if await self._reconcile(client, prompt_id, finished, heartbeat):
                    break
                reconnects += 1
                if reconnects > MAX_RECONNECTS:
                    raise WorkerLost(client.name, f"websocket dropped {reconnects} times during one share: {finished.cause}")
                logger.info("Websocket to %s dropped mid-run (%s); reconnecting", client.name, finished.cause)
                await asyncio.sleep(RECONNECT_BACKOFF_SECONDS * (reconnects - 1))
                try:
                    async with client.events(client_id, heartbeat) as stream:
                        finished = await self._watch_or_drop(client, stream, watch, on_progress)
                except WorkerStalled:
                    raise
                except WorkerUnavailable as error:
                    finished = error if isinstance(error, WorkerLost) else WorkerLost(client.name, error.cause)
            on_progress(ShareProgress(1, 1, None, watch.count.total, watch.count.total, ran=True))
            entry = await self._settled_history(client, prompt_id, client_id)
            if fast:
                outputs = await fetch.fetch_results(client, prompt_id, entry, collector_ids, self.links, limits, work.audio_ids)
            else:
                outputs = await fetch.fetch_outputs(client, entry, collector_ids, limits)
            return ShareResult(outputs, frozenset(watch.cached))
        except BaseException:
            if prompt_id is not None:
                cleanup = asyncio.ensure_future(client.cancel(prompt_id))
                self._cleanups.add(cleanup)
                cleanup.add_done_callback(self._cleanups.discard)
            raise

    async def prepare(self, prompt: Prompt, client: WorkerClient) -> Prompt:
        """The share's prompt as this worker must get it: input files uploaded, file names in its spelling.

        Raises WorkerRejected naming every node class and file the worker lacks. A miss seen in cached
        object info is checked again against a fresh copy (a model may have been added meanwhile).
        """
        info, cached = await self._object_info.get(client)
        review = preflight.review(prompt, info.info)
        if review.problem() and cached:
            info, _ = await self._object_info.get(client, fresh=True)
            review = preflight.review(prompt, info.info)
        problem = review.problem()
        if problem:
            raise WorkerRejected(client.name, problem)
        return await self._media.prepare(review.prompt, info.info, info.fetched_at, client)

    async def _with_inputs(self, prompt: Prompt, work: ShareWork, client: WorkerClient) -> Prompt:
        """The prepared prompt (`prepare`), with the share's in-memory images on the worker: as pixels
        when it takes them, else as PNGs. A worker whose inputs route refuses pixels outright gets PNGs
        from then on, this share included."""
        if work.inputs and await self.takes_pixels(client):
            try:
                prepared = await self.prepare(input_images.source_prompt(prompt, work.inputs), client)
                await input_images.send_inputs(client, work.inputs.values(), self.links.encoding_to(client.worker.id, "uint8"))
                return prepared
            except input_images.PixelsRefused as error:
                logger.warning("Worker %s refused tile pixels (%s); it gets PNGs from now on", client.name, error.cause)
                self._pixels_refused.add(client.identity)
        if work.inputs and self._input_dir is not None:
            await asyncio.gather(*(self._png_written(image) for image in work.inputs.values()))
            for image in work.ahead:
                self._png_written(image)
        return await self.prepare(prompt, client)

    def _png_written(self, image: InputImage) -> asyncio.Future[None]:
        """The writing of the image's PNG into the master's input folder (one at a time per file; a
        file already there is left as it is)."""
        assert self._input_dir is not None
        writing = self._png_writes.get(image.file)
        if writing is None:
            writing = asyncio.ensure_future(asyncio.to_thread(input_images.write_png, self._input_dir, image))
            self._png_writes[image.file] = writing
            writing.add_done_callback(lambda done: _forget_write(self._png_writes, image.file, done))
        return writing

    async def has_fast_path(self, client: WorkerClient) -> bool:
        """Whether the worker runs this extension too (its object info, cached, lists the sink node)."""
        info, _ = await self._object_info.get(client)
        return sink.SINK_CLASS in info.info

    async def takes_pixels(self, client: WorkerClient) -> bool:
        """Whether the worker takes in-memory images as pixels: its object info lists the input node,
        and its route has not refused them."""
        if client.identity in self._pixels_refused:
            return False
        info, _ = await self._object_info.get(client)
        return input_images.INPUT_CLASS in info.info

    async def _watch_or_drop(
        self, client: WorkerClient, stream: EventStream, watch: _Watch, on_progress: ProgressCallback
    ) -> WorkerLost | None:
        """Follows the run until it ends (None) or the websocket is lost (the WorkerLost, to reconcile).
        A stall is not a lost websocket: it is raised."""
        try:
            await self._watch(client, stream, watch, on_progress)
        except WorkerStalled:
            raise
        except WorkerLost as error:
            return error
        return None

    async def _watch(self, client: WorkerClient, stream: EventStream, watch: _Watch, on_progress: ProgressCallback) -> None:
        worker_id = client.worker.id
        while True:
            now = time.monotonic()
            latest = watch.last_event if watch.started else max(watch.last_event, self._activity.get(worker_id, 0.0))
            message = await stream.receive(min(QUIET_CHECK_SECONDS, max(latest + watch.stall_seconds - now, 0.01)))
            now = time.monotonic()
            if message is None:
                if await self._finished_in_history(client, watch.prompt_id) is not None:
                    return
                if watch.stalled(now, self._activity.get(worker_id, 0.0)):
                    raise watch.stall_error(client.name)
                continue
            owner = message.data.get("prompt_id")
            if message.type == "status" and not watch.started:
                watch.last_event = now  # the worker's queue moved
            if owner is not None and owner != watch.prompt_id:
                continue
            if owner == watch.prompt_id:
                watch.last_event = self._activity[worker_id] = now
                if not watch.started:
                    watch.started = True
                    on_progress(ShareProgress.of(0, 1, None))
            if message.type == "execution_error":
                raise WorkerFailed(client.name, describe_execution_error(message.data))
            if message.type == "execution_interrupted":
                raise WorkerFailed(client.name, "the run was interrupted on the worker")
            if message.type == "executing" and owner == watch.prompt_id and message.data.get("node") is None:
                return  # sent once the history entry is written; execution_success comes just before it
            node = message.data.get("node")
            if message.type == "execution_cached":
                nodes = message.data.get("nodes")
                if isinstance(nodes, list):
                    watch.cached.update(str(node) for node in nodes[:MAX_CACHED_NODES] if str(node) in watch.node_ids)
                    on_progress(watch.count.cached(nodes[:MAX_CACHED_NODES]))
            elif message.type == "progress":
                watch.node = _node_id(node)
                on_progress(watch.count.stepped(watch.node, message.data.get("value"), message.data.get("max")))
            elif message.type == "executing" and node is not None:
                watch.node = _node_id(node)
                on_progress(watch.count.started(watch.node or ""))
            elif message.type == "executed" and node is not None:
                on_progress(watch.count.finished(_node_id(node) or ""))

    async def _reconcile(self, client: WorkerClient, prompt_id: str, lost: WorkerLost, read_timeout: float) -> bool:
        """After a websocket drop: True when the prompt finished, False when it is still queued there.

        Raises `lost` itself when the worker does not answer HTTP either (it froze or died, which is
        what the heartbeat said), and WorkerLost when the worker no longer knows the prompt.
        """
        try:
            if await self._finished_in_history(client, prompt_id, read_timeout, strict=True) is not None:
                return True
            if prompt_id in await client.queued_prompt_ids(read_timeout):
                return False
            if await self._finished_in_history(client, prompt_id, read_timeout, strict=True) is not None:
                return True
        except WorkerUnavailable:
            raise lost from None
        raise WorkerLost(client.name, f"lost the prompt after its websocket dropped ({lost.cause}); was it restarted?")

    async def _finished_in_history(self, client: WorkerClient, prompt_id: str, read_timeout: float | None = None,
                                   strict: bool = False) -> dict | None:
        try:
            entry = await client.history(prompt_id, read_timeout) if read_timeout else await client.history(prompt_id)
        except WorkerUnavailable:
            if strict:
                raise
            return None
        return entry if entry and (entry.get("status") or {}).get("completed") is not None else None

    async def _settled_history(self, client: WorkerClient, prompt_id: str, client_id: str) -> dict:
        """The history entry of our prompt; ComfyUI writes it just after it reports success, so wait briefly.

        The entry counts only if it is the prompt this master queued, under `client_id`: a prompt id
        alone can be reused by anyone else who queues on the worker.
        """
        deadline = time.monotonic() + HISTORY_SETTLE_SECONDS
        while True:
            entry = await client.history(prompt_id)
            if entry is not None:
                if queued_by(entry) != client_id:
                    raise BadResult(client.name, f"its history entry for prompt {prompt_id} was not queued by this master "
                                                 "(another client id); its result is not used")
                status = entry.get("status") or {}
                if status.get("status_str") == "error" or status.get("completed") is False:
                    messages = status.get("messages")
                    errors = [m[1] for m in messages if isinstance(m, list) and len(m) > 1 and m[0] == "execution_error"
                              and isinstance(m[1], dict)] if isinstance(messages, list) else []
                    raise WorkerFailed(client.name, describe_execution_error(errors[0]) if errors else "the run ended with an error")
                return entry
            if time.monotonic() > deadline:
                raise WorkerLost(client.name, f"reported success but its history has no entry for {prompt_id}")
            await asyncio.sleep(0.05)


def _forget_write(writes: dict[str, asyncio.Future[None]], file: str, done: asyncio.Future[None]) -> None:
    writes.pop(file, None)
    if not done.cancelled() and done.exception() is not None:
        logger.warning("Could not write the tile file %s: %s", file, done.exception())


def _node_id(value: object) -> str | None:
    """A node id from a worker's event, for messages (the worker is not trusted: capped)."""
    return str(value)[:100] if value is not None else None
