"""A worker is someone else's machine: whatever it answers, the master stays up and the share runs elsewhere.

A small fake worker (aiohttp, the routes a share and a health check use) answers as a well-behaved
ComfyUI unless a test spoils one answer: results of other clients, sizes beyond the job's bounds,
answers too large or too slow, JSON nested too deep. Each test runs the master's real code against it.
"""

from __future__ import annotations

import asyncio
import collections
import io
import json
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from PIL import Image

from distributed.config.models import RegistryFile, WorkerConfig
from distributed.config.registry import Registry
from distributed.errors import BadResult, WorkerOffline
from distributed.events import Events
from distributed.shares import ShareWork
from distributed.transport import wire
from distributed.transport.runner import ShareRunner
from distributed.transport.sink import SINK_CLASS
from distributed.workers import timeouts
from distributed.workers.health import HealthMonitor
from distributed.workers.orphans import OrphanSweeper, ShareOwner
from distributed.workers.pool import ClientPool
from distributed.workers.status import WorkerState, WorkerStatus
from tests.harness import wait_until_async

Serve = Callable[[web.Application], Awaitable[TestServer]]
COLLECTOR = "9"
WORK = ShareWork({"1": {"class_type": "Src", "inputs": {}}, COLLECTOR: {"class_type": "PreviewImage", "inputs": {"images": ["1", 0]}}},
                 (COLLECTOR,))
NESTED = b"[" * 100_000 + b"]" * 100_000
"""Valid JSON that Python's parser cannot take (RecursionError)."""


def png(width: int = 8, height: int = 8) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.zeros((height, width, 3), dtype=np.uint8)).save(buffer, "PNG", compress_level=9)
    return buffer.getvalue()


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class FakeWorker:
    """The routes of a worker ComfyUI that a share and a health check use; `spoil` replaces one by path."""

    def __init__(self, fast: bool = False) -> None:
        self.fast = fast
        self.queued: dict[str, tuple[dict[str, Any], str]] = {}
        """prompt id -> (prompt, client id) as POST /prompt got them."""
        self.sockets: dict[str, web.WebSocketResponse] = {}
        self.requests: collections.Counter[str] = collections.Counter()
        self.result = np.zeros((1, 8, 8, 3), dtype=np.uint8)
        self.described: list[int] | None = None
        """The shape the fast path's history describes; the real result's by default."""
        self.image = png()
        self.entry: Callable[[str], dict[str, Any]] = self.good_entry
        self.spoil: dict[str, Handler] = {}

    def good_entry(self, prompt_id: str) -> dict[str, Any]:
        prompt, client_id = self.queued[prompt_id]
        if self.fast:
            shape = self.described or list(self.result.shape)
            output = {"distributed_result": [{"key": COLLECTOR, "kind": "images", "dtype": "uint8", "shape": shape}]}
        else:
            output = {"images": [{"filename": "a.png", "subfolder": "", "type": "temp"}]}
        return {"prompt": [0, prompt_id, prompt, {"client_id": client_id}, [COLLECTOR]], "outputs": {COLLECTOR: output},
                "status": {"status_str": "success", "completed": True, "messages": []}}

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", "/{path:.*}", self._route)
        return app

    async def _route(self, request: web.Request) -> web.StreamResponse:
        key = request.path.split("/")[1] if not request.path.startswith("/distributed/") else "results"
        self.requests[key] += 1
        if key in self.spoil:
            return await self.spoil[key](request)
        if request.path == "/object_info":
            info = {"Src": {"input": {"required": {}}}, "PreviewImage": {"input": {"required": {"images": ["IMAGE"]}}}}
            return web.json_response({**info, **({SINK_CLASS: {"input": {"required": {}}}} if self.fast else {})})
        if request.path == "/ws":
            return await self._websocket(request)
        if request.path == "/prompt" and request.method == "POST":
            body = await request.json()
            prompt_id = str(uuid.uuid4())
            self.queued[prompt_id] = (body["prompt"], body["client_id"])
            await self.sockets[body["client_id"]].send_json({"type": "executing", "data": {"node": None, "prompt_id": prompt_id}})
            return web.json_response({"prompt_id": prompt_id})
        if request.path.startswith("/history/"):
            prompt_id = request.path.removeprefix("/history/")
            return web.json_response({prompt_id: self.entry(prompt_id)} if prompt_id in self.queued else {})
        if request.path == "/view":
            return web.Response(body=self.image, content_type="image/png")
        if key == "results":
            return web.Response(body=b"".join(bytes(piece) for piece in wire.encode(self.result, "zlib")))
        if request.path == "/system_stats":
            return web.json_response({"system": {"comfyui_version": "0.3.75", "os": "posix"}, "devices": []})
        if request.path == "/prompt":
            return web.json_response({"exec_info": {"queue_remaining": 0}})
        if request.path == "/queue" and request.method == "GET":
            return web.json_response({"queue_running": [], "queue_pending": []})
        return web.json_response({})

    async def _websocket(self, request: web.Request) -> web.WebSocketResponse:
        socket = web.WebSocketResponse()
        await socket.prepare(request)
        self.sockets[request.query["clientId"]] = socket
        async for _ in socket:
            pass
        return socket


def registry_with(tmp_path: Path, port: int, **settings: Any) -> tuple[Registry, WorkerConfig]:
    worker = WorkerConfig(id="h", name="Hostile", port=port)
    registry = Registry(tmp_path / "workers.json")

    def add(config: RegistryFile) -> RegistryFile:
        config.workers.append(worker)
        config.settings = config.settings.model_copy(update=settings)
        return config

    registry.update(add)
    return registry, worker


async def run_share(tmp_path: Path, serve: Serve, fake: FakeWorker, work: ShareWork = WORK, **settings: Any) -> Any:
    server = await serve(fake.app())
    registry, worker = registry_with(tmp_path, server.port, **settings)
    pool = ClientPool(lambda: registry.snapshot().settings.max_answer_mib << 20)  # as the application wires it
    try:
        async with asyncio.timeout(30):
            return (await ShareRunner(registry, pool, ShareOwner("master1")).run(work, worker, 1, lambda progress: None)).outputs
    finally:
        await pool.close()


async def test_a_well_behaved_worker_delivers_on_both_paths(tmp_path: Path, aiohttp_server: Serve) -> None:
    stock = await run_share(tmp_path / "stock", aiohttp_server, FakeWorker())
    fast = await run_share(tmp_path / "fast", aiohttp_server, FakeWorker(fast=True))

    assert stock[COLLECTOR].shape == (1, 8, 8, 3) and fast[COLLECTOR].shape == (1, 8, 8, 3)


# --- whose result it is ---------------------------------------------------------------------------------


async def test_a_history_entry_queued_by_another_client_is_not_taken_for_the_share(tmp_path: Path, aiohttp_server: Serve) -> None:
    fake = FakeWorker()
    fake.entry = lambda prompt_id: {**fake.good_entry(prompt_id), "prompt": [0, prompt_id, {}, {"client_id": "someone-else"}, []]}

    with pytest.raises(BadResult, match="not queued by this master") as caught:
        await run_share(tmp_path, aiohttp_server, fake)
    assert caught.value.worker_name == "Hostile" and fake.requests["view"] == 0


# --- malformed answers ------------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [["done"], "success", 7])
async def test_a_history_status_that_is_no_object_is_a_bad_result(tmp_path: Path, aiohttp_server: Serve, status: object) -> None:
    fake = FakeWorker()
    fake.entry = lambda prompt_id: {**fake.good_entry(prompt_id), "status": status}

    with pytest.raises(BadResult, match="malformed status"):
        await run_share(tmp_path, aiohttp_server, fake)


async def test_a_history_nested_too_deep_is_a_bad_result(tmp_path: Path, aiohttp_server: Serve) -> None:
    fake = FakeWorker()

    async def nested(request: web.Request) -> web.Response:
        return web.Response(body=NESTED, content_type="application/json")

    fake.spoil["history"] = nested

    with pytest.raises(BadResult, match="nested too deep"):
        await run_share(tmp_path, aiohttp_server, fake)


# --- sizes: bounded by the job before anything is allocated ---------------------------------------------


async def test_a_described_image_beyond_the_pixel_cap_is_refused_before_it_is_fetched(tmp_path: Path, aiohttp_server: Serve) -> None:
    fake = FakeWorker(fast=True)
    fake.described = [1, 10_000, 10_000, 3]  # 100 megapixels; the default cap is 64

    with pytest.raises(BadResult, match="megapixels"):
        await run_share(tmp_path, aiohttp_server, fake)
    assert fake.requests["results"] == 0


async def test_a_described_image_of_another_size_than_the_masters_is_refused_before_it_is_fetched(
    tmp_path: Path, aiohttp_server: Serve,
) -> None:
    fake = FakeWorker(fast=True)
    fake.described = [1, 512, 512, 3]
    work = ShareWork(WORK.prompt, WORK.collector_ids, image_sizes={COLLECTOR: (8, 8, 3)})

    with pytest.raises(BadResult, match="the master's are 8x8x3"):
        await run_share(tmp_path, aiohttp_server, fake, work)
    assert fake.requests["results"] == 0


async def test_more_images_than_the_batch_slice_are_refused_before_they_are_fetched(tmp_path: Path, aiohttp_server: Serve) -> None:
    fake = FakeWorker(fast=True)
    fake.described = [64, 8, 8, 3]
    work = ShareWork(WORK.prompt, WORK.collector_ids, max_images=2)

    with pytest.raises(BadResult, match=r"64 images .* its share is 2"):
        await run_share(tmp_path, aiohttp_server, fake, work)
    assert fake.requests["results"] == 0


async def test_a_result_beyond_the_result_cap_is_refused_before_it_is_fetched(tmp_path: Path, aiohttp_server: Serve) -> None:
    fake = FakeWorker(fast=True)
    fake.described = [16, 1024, 1024, 3]  # 192 MiB as float32

    with pytest.raises(BadResult, match="max_result_mib"):
        await run_share(tmp_path, aiohttp_server, fake, max_result_mib=100)
    assert fake.requests["results"] == 0


async def test_a_png_beyond_the_pixel_cap_is_refused_from_its_header(tmp_path: Path, aiohttp_server: Serve) -> None:
    fake = FakeWorker()
    fake.image = png(2000, 2000)  # 4 megapixels of zeros: 1000:1 in the file

    with pytest.raises(BadResult, match=r"2000x2000 image .* megapixels"):
        await run_share(tmp_path, aiohttp_server, fake, max_image_megapixels=1)


async def test_a_view_answer_larger_than_any_png_within_the_cap_is_refused_unread(tmp_path: Path, aiohttp_server: Serve) -> None:
    fake = FakeWorker()
    fake.image = bytes(20 << 20)

    with pytest.raises(BadResult, match="/view answered more than"):
        await run_share(tmp_path, aiohttp_server, fake, max_image_megapixels=1)


async def test_an_answer_larger_than_the_answer_cap_is_refused(tmp_path: Path, aiohttp_server: Serve) -> None:
    fake = FakeWorker()

    async def endless(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        response.enable_chunked_encoding()
        await response.prepare(request)
        for _ in range(3):
            await response.write(b" " * (1 << 20))
        return response

    fake.spoil["object_info"] = endless

    with pytest.raises(BadResult, match=r"GET /object_info answered more than 1 MiB.*max_answer_mib"):
        await run_share(tmp_path, aiohttp_server, fake, max_answer_mib=1)


# --- deadlines ----------------------------------------------------------------------------------------------


def trickle(total: int, piece: bytes = b" ") -> Handler:
    """An answer that announces `total` bytes and sends a byte now and then: never silent long enough
    for a read timeout."""

    async def handler(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Length": str(total)})
        await response.prepare(request)
        for _ in range(total):
            await response.write(piece)
            await asyncio.sleep(0.2)
        return response

    return handler


async def test_an_answer_trickled_byte_by_byte_misses_its_deadline(aiohttp_server: Serve) -> None:
    fake = FakeWorker()
    fake.spoil["system_stats"] = trickle(1000)
    server = await aiohttp_server(fake.app())
    pool = ClientPool()
    try:
        async with asyncio.timeout(15):
            with pytest.raises(WorkerOffline, match="not answered in full within 4s") as caught:
                await pool.client(WorkerConfig(id="h", name="Hostile", port=server.port)).get_json("/system_stats", read_timeout=1.0)
    finally:
        await pool.close()
    assert caught.value.stage == "timeout"


async def test_an_image_trickled_byte_by_byte_misses_its_transfer_deadline(tmp_path: Path, aiohttp_server: Serve,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(timeouts, "TRANSFER_GRACE_SECONDS", 1.0)
    fake = FakeWorker()
    fake.spoil["view"] = trickle(1000)

    with pytest.raises(WorkerOffline, match="GET /view was not answered in full"):
        await run_share(tmp_path, aiohttp_server, fake)


# --- the loops that talk to workers keep running -------------------------------------------------------------


def spoiled_json(body: bytes) -> Handler:
    async def handler(request: web.Request) -> web.Response:
        return web.Response(body=body, content_type="application/json")

    return handler


@pytest.mark.parametrize(("route", "body"), [("system_stats", NESTED), ("prompt", b'{"exec_info": {"queue_remaining": Infinity}}')])
async def test_a_health_check_on_a_malformed_answer_shows_the_worker_in_error_and_backs_off(
    tmp_path: Path, aiohttp_server: Serve, route: str, body: bytes,
) -> None:
    fake = FakeWorker()
    fake.spoil[route] = spoiled_json(body)
    server = await aiohttp_server(fake.app())
    registry, worker = registry_with(tmp_path, server.port)
    pool = ClientPool()
    health = HealthMonitor(registry, pool, Events(lambda event, data: None))
    try:
        async with asyncio.timeout(15):
            first = await health.check(worker)
            second = await health.check(worker)
    finally:
        await pool.close()

    assert first.state == second.state == WorkerState.ERROR and first.error
    assert health.status(worker.id).state == WorkerState.ERROR
    assert health._due[worker.id] > time.monotonic() + 2 * registry.snapshot().settings.health_interval  # backed off


class _Online:
    def status(self, worker_id: str) -> WorkerStatus:
        return WorkerStatus(WorkerState.ONLINE)


async def test_the_orphan_sweeper_outlives_a_malformed_queue(tmp_path: Path, aiohttp_server: Serve) -> None:
    owner = ShareOwner("master1", run_id="now")
    left_behind = ShareOwner("master1", run_id="before").client_id(1)
    answers = [{"queue_running": 5, "queue_pending": {}}, NESTED,
               {"queue_running": [[0, "old-prompt", {}, {"client_id": left_behind}, []]], "queue_pending": []}]
    deleted: list[Any] = []
    fake = FakeWorker()

    async def queue(request: web.Request) -> web.Response:
        if request.method == "POST":
            deleted.append((await request.json()).get("delete"))
            return web.json_response({})
        answer = answers.pop(0) if len(answers) > 1 else answers[0]
        return web.Response(body=answer if isinstance(answer, bytes) else json.dumps(answer).encode(), content_type="application/json")

    fake.spoil["queue"] = queue
    server = await aiohttp_server(fake.app())
    registry, _ = registry_with(tmp_path, server.port)
    pool = ClientPool()
    sweeper = asyncio.ensure_future(OrphanSweeper(owner, registry, _Online(), pool).run())  # type: ignore[arg-type]
    try:
        await wait_until_async(lambda: ["old-prompt"] in deleted or sweeper.done(), 20, message="the left-behind prompt cancelled")
    finally:
        sweeper.cancel()
        await asyncio.gather(sweeper, return_exceptions=True)
        await pool.close()

    assert ["old-prompt"] in deleted



async def test_a_websocket_message_nested_too_deep_is_skipped(aiohttp_server: Serve) -> None:
    fake = FakeWorker()

    async def websocket(request: web.Request) -> web.WebSocketResponse:
        socket = web.WebSocketResponse()
        await socket.prepare(request)
        await socket.send_str(NESTED.decode())
        await socket.send_json({"type": "status", "data": {}})
        async for _ in socket:
            pass
        return socket

    fake.spoil["ws"] = websocket
    server = await aiohttp_server(fake.app())
    pool = ClientPool()
    try:
        async with asyncio.timeout(15), pool.client(WorkerConfig(id="h", name="Hostile", port=server.port)).events("c1", 5) as stream:
            message = await stream.receive(10)
    finally:
        await pool.close()

    assert message is not None and message.type == "status"
