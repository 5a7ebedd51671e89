"""The worker-side result store and its route, served by a real aiohttp server."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

import numpy as np
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from distributed.transport import wire
from distributed.transport.result_store import ResultStore, make_results_handler
from distributed.transport.sink import RESULTS_PATH
from tests.unit.wire_stream import decode


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def image(nbytes: int = 3000, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (1, nbytes // 30, 10, 3), dtype=np.uint8)


def test_stored_result_is_returned_until_deleted() -> None:
    store = ResultStore()
    array = image()
    store.put("p1", "9", array)
    entry = store.get("p1", "9")
    assert entry is not None and entry.array is array
    assert store.delete("p1", "9")
    assert store.get("p1", "9") is None


def test_result_expires_after_the_ttl() -> None:
    clock = FakeClock()
    store = ResultStore(ttl_s=60, clock=clock)
    store.put("p1", "9", image())
    clock.now += 59
    assert store.get("p1", "9") is not None
    clock.now += 2
    assert store.get("p1", "9") is None


def test_purge_drops_expired_results_without_another_access() -> None:
    clock = FakeClock()
    store = ResultStore(ttl_s=60, clock=clock)
    store.put("p1", "9", image())
    clock.now += 61
    assert store.purge_expired() == 1
    assert store.purge_expired() == 0


def test_byte_cap_evicts_the_oldest_result_and_logs_it(caplog: pytest.LogCaptureFixture) -> None:
    store = ResultStore(max_bytes=7000)
    store.put("p1", "9", image(3000))
    store.put("p2", "9", image(3000))
    with caplog.at_level(logging.WARNING, logger="distributed.transport.result_store"):
        store.put("p3", "9", image(3000))
    assert store.get("p1", "9") is None
    assert store.get("p2", "9") is not None and store.get("p3", "9") is not None
    assert "prompt p1 node 9" in caplog.text
    store.put("p4", "9", image(1000))  # 7000 bytes in all: the eviction freed p1's bytes, nothing more goes
    assert store.get("p2", "9") is not None


def test_result_larger_than_the_cap_is_kept_alone() -> None:
    store = ResultStore(max_bytes=5000)
    store.put("p1", "9", image(3000))
    store.put("p2", "9", image(9000))
    assert store.get("p1", "9") is None
    assert store.get("p2", "9") is not None


def test_second_put_for_the_same_node_replaces_the_first() -> None:
    store = ResultStore(max_bytes=9000)
    store.put("p1", "9", image(3000))
    newer = image(6000)
    store.put("p1", "9", newer)
    entry = store.get("p1", "9")
    assert entry is not None and entry.array is newer
    store.put("p2", "9", image(3000))  # fits beside 6000 bytes: the replaced 3000 were given back
    assert store.get("p1", "9") is not None


def test_unknown_encoding_hint_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown wire encoding"):
        ResultStore().put("p1", "9", image(), encoding_hint="gif")


def test_array_the_wire_cannot_carry_is_refused_when_stored() -> None:
    with pytest.raises(ValueError, match="uint8, float16 or float32"):
        ResultStore().put("p1", "9", np.zeros((2, 2), dtype=np.int64))


AiohttpClient = Callable[[web.Application], Awaitable[TestClient]]


async def serve(aiohttp_client: AiohttpClient, store: ResultStore, chunk_size: int = 1 << 16) -> TestClient:
    app = web.Application()
    handler = make_results_handler(store, chunk_size=chunk_size)
    app.router.add_get(RESULTS_PATH, handler)
    app.router.add_delete(RESULTS_PATH, handler)
    return await aiohttp_client(app)


@pytest.mark.parametrize("encoding", wire.ENCODINGS)
async def test_result_is_streamed_chunked_and_decodes_bit_exact(aiohttp_client: AiohttpClient, encoding: str) -> None:
    store = ResultStore()
    original = np.random.default_rng(1).random((4, 301, 257, 3), dtype=np.float32)
    store.put("p1", "12", original)
    client = await serve(aiohttp_client, store)
    async with asyncio.timeout(60):
        response = await client.get("/distributed/results/p1/12", params={"encoding": encoding})
        assert response.status == 200
        assert response.headers["Transfer-Encoding"] == "chunked"
        assert response.headers["X-Distributed-Encoding"] == encoding
        decoded = await wire.read_stream(response.content, wire.Decoder("worker-a"), batch_bytes=1 << 18)
    assert decoded.tobytes() == original.tobytes() and decoded.shape == original.shape


async def test_entry_is_dropped_once_fully_sent(aiohttp_client: AiohttpClient) -> None:
    store = ResultStore()
    store.put("p1", "12", image())
    client = await serve(aiohttp_client, store)
    async with asyncio.timeout(30):
        response = await client.get("/distributed/results/p1/12")
        await response.read()
    assert store.get("p1", "12") is None


async def test_entry_hint_is_the_default_encoding(aiohttp_client: AiohttpClient) -> None:
    store = ResultStore()
    store.put("p1", "12", image(), encoding_hint="zlib")
    client = await serve(aiohttp_client, store)
    async with asyncio.timeout(30):
        response = await client.get("/distributed/results/p1/12")
        body = await response.read()
    assert response.headers["X-Distributed-Encoding"] == "zlib"
    assert decode(body).shape == (1, 100, 10, 3)


async def test_missing_result_answers_404_with_json(aiohttp_client: AiohttpClient) -> None:
    client = await serve(aiohttp_client, ResultStore())
    async with asyncio.timeout(30):
        response = await client.get("/distributed/results/p1/12")
        body = await response.json()
    assert response.status == 404
    assert "prompt 'p1' node '12'" in body["error"]


async def test_unknown_encoding_answers_400_naming_the_field(aiohttp_client: AiohttpClient) -> None:
    store = ResultStore()
    store.put("p1", "12", image())
    client = await serve(aiohttp_client, store)
    async with asyncio.timeout(30):
        response = await client.get("/distributed/results/p1/12", params={"encoding": "gif"})
        body = await response.json()
    assert response.status == 400
    assert body["field"] == "encoding"
    assert store.get("p1", "12") is not None


async def test_delete_drops_an_unfetched_result(aiohttp_client: AiohttpClient) -> None:
    store = ResultStore()
    store.put("p1", "12", image())
    client = await serve(aiohttp_client, store)
    async with asyncio.timeout(30):
        deleted = await client.delete("/distributed/results/p1/12")
        again = await client.get("/distributed/results/p1/12")
    assert deleted.status == 200
    assert again.status == 404


async def test_head_describes_the_result_without_consuming_it(aiohttp_client: AiohttpClient) -> None:
    store = ResultStore()
    store.put("p1", "12", np.zeros((2, 3, 4), dtype=np.float16))
    client = await serve(aiohttp_client, store)
    async with asyncio.timeout(30):
        response = await client.head("/distributed/results/p1/12")
    assert response.status == 200
    assert response.headers["X-Distributed-Shape"] == "2,3,4"
    assert store.get("p1", "12") is not None
