"""The real ShareRunner against a fake worker: a small aiohttp app speaking ComfyUI's /object_info,
/prompt, /ws, /history, /queue and /view, whose events the test scripts. Covers the run's start,
progress and cache reports, and a share stuck in a node while the worker's server keeps answering."""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from PIL import Image

from distributed.config.models import WorkerConfig
from distributed.errors import WorkerStalled
from distributed.shares import InputImage, ShareProgress, ShareWork
from distributed.transport.input_images import INPUT_CLASS, INPUTS_PATH, key_of
from distributed.transport.runner import ShareRunner
from distributed.workers.orphans import ShareOwner
from distributed.workers.pool import ClientPool
from tests.harness import wait_until_async
from tests.unit.dispatch_fakes import write_registry

PROMPT_ID = "prompt-1"
WORK = ShareWork(
    {"2": {"class_type": "Loader", "inputs": {}}, "3": {"class_type": "Stamp", "inputs": {"model": ["2", 0]}},
     "4": {"class_type": "PreviewImage", "inputs": {"images": ["3", 0]}}},
    ("4",),
)
Script = Callable[["FakeWorker", web.WebSocketResponse], Awaitable[None]]


def _png() -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.full((4, 6, 3), 200, dtype=np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


@dataclass
class FakeWorker:
    """A worker ComfyUI as the runner sees it; `script` sends the run's websocket events."""

    script: Script
    finished: bool = False
    interrupted: list[Any] = field(default_factory=list)
    submitted: list[dict[str, Any]] = field(default_factory=list)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/object_info", self.object_info)
        app.router.add_post("/prompt", self.prompt)
        app.router.add_get("/ws", self.websocket)
        app.router.add_get("/history/{prompt_id}", self.history)
        app.router.add_get("/queue", self.queue)
        app.router.add_post("/queue", self.delete)
        app.router.add_post("/interrupt", self.interrupt)
        app.router.add_get("/view", self.view)
        return app

    async def object_info(self, request: web.Request) -> web.Response:
        node = {"input": {"required": {}}}
        return web.json_response({"Loader": node, "Stamp": node, "PreviewImage": node})

    async def prompt(self, request: web.Request) -> web.Response:
        self.submitted.append(await request.json())
        return web.json_response({"prompt_id": PROMPT_ID, "number": 1, "node_errors": {}})

    async def websocket(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        await ws.send_json({"type": "status", "data": {"status": {"exec_info": {"queue_remaining": 0}}, "sid": "x"}})
        await wait_until_async(lambda: self.submitted, 5)
        await self.script(self, ws)
        async for _ in ws:  # keep answering heartbeats, like ComfyUI's server thread does
            pass
        return ws

    async def history(self, request: web.Request) -> web.Response:
        if not self.finished:
            return web.json_response({})
        queued = [1, PROMPT_ID, {}, {"client_id": self.submitted[0]["client_id"]}, []]
        entry = {"prompt": queued, "status": {"status_str": "success", "completed": True, "messages": []},
                 "outputs": {"4": {"images": [{"filename": "a.png", "subfolder": "", "type": "temp"}]}}}
        return web.json_response({PROMPT_ID: entry})

    async def queue(self, request: web.Request) -> web.Response:
        running = [] if self.finished else [[1, PROMPT_ID, {}, {}, []]]
        return web.json_response({"queue_running": running, "queue_pending": []})

    async def delete(self, request: web.Request) -> web.Response:
        return web.json_response({})

    async def interrupt(self, request: web.Request) -> web.Response:
        self.interrupted.append(await request.json())
        return web.json_response({})

    async def view(self, request: web.Request) -> web.Response:
        return web.Response(body=_png(), content_type="image/png")


def event(kind: str, **data: Any) -> str:
    return json.dumps({"type": kind, "data": {"prompt_id": PROMPT_ID, **data}})


async def runs_to_the_end(worker: FakeWorker, ws: web.WebSocketResponse) -> None:
    await ws.send_str(event("execution_start", timestamp=1))
    await ws.send_str(event("execution_cached", nodes=["2", "not-in-the-prompt"], timestamp=1))
    await ws.send_str(event("executing", node="3", display_node="3"))
    for step in (1, 2):
        await ws.send_str(event("progress", value=step, max=2, node="3"))
    worker.finished = True
    await ws.send_str(event("executing", node=None))


async def waits_behind_moving_work_then_runs(worker: FakeWorker, ws: web.WebSocketResponse) -> None:
    """Twice the stall timeout in the queue behind other prompts (the queue keeps moving), then runs."""
    for remaining in range(5, 0, -1):
        await ws.send_json({"type": "status", "data": {"status": {"exec_info": {"queue_remaining": remaining}}}})
        await asyncio.sleep(0.2)
    await runs_to_the_end(worker, ws)


async def hangs_in_node_3(worker: FakeWorker, ws: web.WebSocketResponse) -> None:
    await ws.send_str(event("execution_start", timestamp=1))
    await ws.send_str(event("executing", node="3", display_node="3"))


@dataclass
class Setup:
    runner: ShareRunner
    worker: WorkerConfig


@pytest.fixture
async def served(tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[tuple[FakeWorker, Setup]]:
    fake = FakeWorker(request.param)
    server = TestServer(fake.app())
    await server.start_server()
    registry = write_registry(tmp_path / "workers.json", [], stall_timeout=0.5)
    worker = WorkerConfig(id="w", name="Fake", type="remote", host="127.0.0.1", port=server.port)
    clients = ClientPool()
    try:
        yield fake, Setup(ShareRunner(registry, clients, ShareOwner("m1")), worker)
    finally:
        await clients.close()
        await server.close()


@pytest.mark.parametrize("served", [runs_to_the_end], indirect=True)
async def test_a_share_reports_its_start_its_steps_its_end_and_what_the_worker_took_from_its_cache(
    served: tuple[FakeWorker, Setup],
) -> None:
    fake, setup = served
    progress: list[ShareProgress] = []

    result = await asyncio.wait_for(setup.runner.run(WORK, setup.worker, 1, progress.append), 10)

    assert progress[0] == ShareProgress(0, 1, None)
    assert progress[1:-1] == [ShareProgress(0, 1, None, 1, 3), ShareProgress(0, 1, "3", 1, 3),
                              ShareProgress(1, 2, "3", 1, 3), ShareProgress(2, 2, "3", 1, 3)]
    assert progress[-1].ran and progress[-1].fraction == 1.0  # the worker is done; the fetch follows
    assert result.cached_nodes == {"2"}
    assert result.outputs["4"].shape == (1, 4, 6, 3)
    assert fake.submitted[0]["client_id"].startswith("distributed-m1-")


@pytest.mark.parametrize("served", [hangs_in_node_3], indirect=True)
async def test_a_share_stuck_in_a_node_while_the_server_answers_fails_as_stalled(served: tuple[FakeWorker, Setup]) -> None:
    fake, setup = served

    with pytest.raises(WorkerStalled, match=r"worker 'Fake': showed no progress for 0\.5 s \(stall_timeout\), stuck in node 3"):
        await asyncio.wait_for(setup.runner.run(WORK, setup.worker, 1, lambda progress: None), 10)

    await wait_until_async(lambda: fake.interrupted, 5, message="the stuck prompt to be interrupted on the worker")


@pytest.mark.parametrize("served", [waits_behind_moving_work_then_runs], indirect=True)
async def test_a_share_waiting_in_a_queue_that_moves_is_not_stalled(served: tuple[FakeWorker, Setup]) -> None:
    _, setup = served

    result = await asyncio.wait_for(setup.runner.run(WORK, setup.worker, 1, lambda progress: None), 10)

    assert result.outputs["4"].shape == (1, 4, 6, 3)


@dataclass
class ProxiedWorker(FakeWorker):
    """A worker that runs this extension behind a proxy that refuses PUT: its inputs route answers
    HEAD (nothing held) but a tile's pixels cannot reach it. ComfyUI's own upload still works."""

    requests: list[str] = field(default_factory=list)

    def app(self) -> web.Application:
        app = super().app()
        app.router.add_route("HEAD", INPUTS_PATH, self.held)
        app.router.add_post("/upload/image", self.upload)
        return app

    async def object_info(self, request: web.Request) -> web.Response:
        node = {"input": {"required": {}}}
        load = {"input": {"required": {"image": [[], {"image_upload": True}]}}}
        return web.json_response({"Loader": node, "Stamp": node, "PreviewImage": node, "LoadImage": load, INPUT_CLASS: node})

    async def held(self, request: web.Request) -> web.Response:
        self.requests.append("HEAD")
        return web.Response(status=404)

    async def upload(self, request: web.Request) -> web.Response:
        form = await request.post()
        self.requests.append("upload")
        return web.json_response({"name": form["image"].filename, "subfolder": form["subfolder"], "type": "input"})


async def test_a_worker_whose_route_refuses_pixels_gets_the_tile_as_a_png_now_and_from_then_on(tmp_path: Path) -> None:
    fake = ProxiedWorker(runs_to_the_end)
    server = TestServer(fake.app())
    await server.start_server()
    pixels, later = np.full((8, 8, 3), 7, dtype=np.uint8), np.full((8, 8, 3), 9, dtype=np.uint8)
    tile = InputImage(key_of(pixels), pixels, "distributed_tiles/t.png")
    next_tile = InputImage(key_of(later), later, "distributed_tiles/next.png")
    work = ShareWork({**WORK.prompt, "t.load": {"class_type": "LoadImage", "inputs": {"image": tile.file}}}, WORK.collector_ids,
                     inputs={"t.load": tile}, ahead=(next_tile,))
    registry = write_registry(tmp_path / "workers.json", [], stall_timeout=5)
    clients = ClientPool()
    runner = ShareRunner(registry, clients, ShareOwner("m1"), input_dir=tmp_path)
    worker = WorkerConfig(id="w", name="Fake", type="remote", host="127.0.0.1", port=server.port)
    try:
        result = await asyncio.wait_for(runner.run(work, worker, 1, lambda progress: None), 10)
        takes_pixels_afterwards = await runner.takes_pixels(clients.client(worker))
    finally:
        await clients.close()
        await server.close()

    assert result.outputs["4"].shape == (1, 4, 6, 3)
    assert fake.requests == ["HEAD", "upload"]  # the PUT was refused (405), then the PNG went up
    assert fake.submitted[0]["prompt"]["t.load"] == {"class_type": "LoadImage", "inputs": {"image": "distributed_tiles/t.png"}}
    assert np.array_equal(np.asarray(Image.open(tmp_path / tile.file)), pixels)
    assert not takes_pixels_afterwards
    # The next share's tile is written meanwhile, for whichever worker takes files next.
    await wait_until_async(lambda: (tmp_path / next_tile.file).exists(), 5, message="the next tile's PNG written ahead")
    assert np.array_equal(np.asarray(Image.open(tmp_path / next_tile.file)), later)
