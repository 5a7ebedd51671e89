"""Upscale tiles on the fast input path: the worker's route and store (real aiohttp app), the
master's sender (real WorkerClient), the prompt rewrite, and the PNGs stock workers get instead."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import numpy as np
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from PIL import Image

from distributed.config.models import WorkerConfig
from distributed.errors import WorkerFailed
from distributed.shares import InputImage
from distributed.transport import wire
from distributed.transport.input_images import (
    INPUT_CLASS,
    INPUTS_PATH,
    clear_pngs,
    input_path,
    key_of,
    send_inputs,
    source_prompt,
    write_png,
)
from distributed.transport.input_store import MAX_BODY_BYTES, InputStore, make_inputs_handler
from distributed.workers.pool import ClientPool
from tests.harness import wait_until_async


def image(seed: int, height: int = 24, width: int = 32) -> InputImage:
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    key = key_of(pixels)
    return InputImage(key, pixels, f"distributed_tiles/{key[:32]}.png")


class Worker:
    """The worker's inputs route on a real server, counting the requests it answers."""

    def __init__(self, store: InputStore) -> None:
        self.store = store
        self.methods: list[str] = []
        handler = make_inputs_handler(store, receiving_at_once=1, busy_wait_s=0.5)

        @web.middleware
        async def count(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
            self.methods.append(request.method)
            return await handler(request)

        self.app = web.Application(middlewares=[count])
        self.app.router.add_route("HEAD", INPUTS_PATH, handler)
        self.app.router.add_route("PUT", INPUTS_PATH, handler)


@pytest.fixture
async def worker() -> AsyncIterator[tuple[Worker, WorkerConfig, ClientPool]]:
    fake = Worker(InputStore())
    server = TestServer(fake.app)
    await server.start_server()
    clients = ClientPool()
    try:
        yield fake, WorkerConfig(id="w", name="Fake", type="remote", host="127.0.0.1", port=server.port), clients
    finally:
        await clients.close()
        await server.close()


async def test_an_image_crosses_once_while_the_worker_keeps_it(worker: tuple[Worker, WorkerConfig, ClientPool]) -> None:
    fake, config, clients = worker
    tile = image(1)

    await send_inputs(clients.client(config), [tile, tile], "zlib")
    await send_inputs(clients.client(config), [tile], "raw")

    assert fake.methods == ["HEAD", "PUT", "HEAD"]
    kept = fake.store.get(tile.key)
    assert kept is not None and np.array_equal(kept, tile.pixels) and not kept.flags.writeable


async def test_pixels_that_do_not_hash_to_their_key_are_refused_and_change_nothing(
    worker: tuple[Worker, WorkerConfig, ClientPool],
) -> None:
    fake, config, clients = worker
    honest, other = image(1), image(2)
    forged = InputImage(honest.key, other.pixels, honest.file)

    with pytest.raises(WorkerFailed, match=r"did not take the pixels of tile image \w{12} \(HTTP 400: body: the pixels do not hash"):
        await send_inputs(clients.client(config), [forged], "raw")

    assert fake.store.get(honest.key) is None


async def test_a_key_that_is_not_a_sha256_and_a_body_that_is_not_an_image_get_a_400_naming_the_field(
    worker: tuple[Worker, WorkerConfig, ClientPool],
) -> None:
    _, config, clients = worker
    client = clients.client(config)
    tile = image(3)
    gray = np.zeros((4, 4), dtype=np.uint8)

    status, body = await client.send("PUT", input_path("../../etc"), data=b"x", data_size=1)
    assert status in (400, 404) and (status == 404 or body["field"] == "key")
    status, body = await client.send("PUT", input_path("A" * 64), data=b"x", data_size=1)
    assert (status, body["field"]) == (400, "key")
    wrong_shape = b"".join(wire.encode(gray))
    status, body = await client.send("PUT", input_path(tile.key), data=wrong_shape, data_size=len(wrong_shape))
    assert (status, body["field"]) == (400, "body")
    status, body = await client.send("PUT", input_path(tile.key), data=b"not the wire format", data_size=19)
    assert (status, body["field"]) == (400, "body")


def test_the_store_drops_the_least_recently_used_beyond_its_cap_and_what_lies_unused_past_its_ttl() -> None:
    now = [0.0]
    a, b, c = image(1), image(2), image(3)
    store = InputStore(max_bytes=2 * a.pixels.nbytes, ttl_s=100, clock=lambda: now[0])
    store.put(a.key, a.pixels.copy())
    store.put(b.key, b.pixels.copy())
    assert store.get(a.key) is not None  # a is now the most recently used

    store.put(c.key, c.pixels.copy())
    assert store.get(b.key) is None and store.get(a.key) is not None and store.get(c.key) is not None

    now[0] = 99.0
    assert store.get(c.key) is not None
    now[0] = 150.0
    assert store.purge_expired() == 1  # a, last used at 0; c was used at 99
    assert store.get(a.key) is None and store.get(c.key) is not None


def test_only_the_listed_loaders_are_replaced_by_the_input_node() -> None:
    tile = image(4)
    prompt = {"t.load": {"class_type": "LoadImage", "inputs": {"image": tile.file}},
              "user": {"class_type": "LoadImage", "inputs": {"image": "cat.png"}}}

    rewritten = source_prompt(prompt, {"t.load": tile})

    assert rewritten["t.load"] == {"class_type": INPUT_CLASS, "inputs": {"key": tile.key}}
    assert rewritten["user"] == prompt["user"] and prompt["t.load"]["class_type"] == "LoadImage"


def test_a_stock_worker_s_png_holds_the_very_pixels_and_is_written_once(tmp_path: Path) -> None:
    tile = image(5)

    write_png(tmp_path, tile)
    path = tmp_path / tile.file
    written_at = path.stat().st_mtime_ns
    write_png(tmp_path, tile)

    assert np.array_equal(np.asarray(Image.open(path)), tile.pixels)
    assert path.stat().st_mtime_ns == written_at
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no partial file left beside it


async def test_a_body_over_the_cap_is_refused_before_it_is_read_and_a_busy_worker_says_so(
    worker: tuple[Worker, WorkerConfig, ClientPool],
) -> None:
    fake, config, clients = worker
    client = clients.client(config)
    tile = image(6)
    reader, writer = await asyncio.open_connection("127.0.0.1", config.port)
    writer.write(f"PUT {input_path(tile.key)} HTTP/1.1\r\nHost: w\r\nContent-Length: {MAX_BODY_BYTES + 1}\r\n\r\n".encode())
    await writer.drain()
    status_line = await asyncio.wait_for(reader.readline(), 5)  # answered with no byte of the body sent
    writer.close()
    assert status_line.split()[1] == b"413"

    release = asyncio.Event()

    async def trickle() -> AsyncIterator[bytes]:
        yield b"".join(wire.encode(tile.pixels))[:10]
        await release.wait()

    stuck = asyncio.ensure_future(client.send("PUT", input_path(tile.key), data=trickle(), data_size=16))
    try:
        await wait_until_async(lambda: fake.methods.count("PUT") == 2, 5, message="the trickling body to hold the only slot")
        status, body = await client.send("PUT", input_path(image(7).key), data=b"", data_size=1)
        assert (status, body["field"]) == (503, "body") and "busy" in body["error"]
    finally:
        release.set()
        stuck.cancel()
        await asyncio.gather(stuck, return_exceptions=True)


def test_the_tile_folder_is_emptied_whatever_is_in_it(tmp_path: Path) -> None:
    write_png(tmp_path, image(8))
    write_png(tmp_path, image(9))
    (tmp_path / "distributed_tiles" / ".late.png.part").write_bytes(b"x")
    (tmp_path / "cat.png").write_bytes(b"x")

    clear_pngs(tmp_path, "distributed_tiles")

    assert not list((tmp_path / "distributed_tiles").iterdir()) and (tmp_path / "cat.png").exists()
