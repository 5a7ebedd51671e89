"""A worker locked with DISTRIBUTED_WORKER_TOKEN answers only requests that carry the token."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from distributed.workers import lock

TOKEN = "pod-token-0123456789abcdef"


@pytest.fixture
async def client(aiohttp_client: Callable[[web.Application], Awaitable[TestClient]]) -> TestClient:
    async def anything(request: web.Request) -> web.Response:
        return web.Response(text="comfyui")

    app = web.Application(middlewares=[lock.worker_guard(TOKEN)])
    app.router.add_route("*", "/{tail:.*}", anything)
    return await aiohttp_client(app)


@pytest.mark.parametrize("path", ["/prompt", "/view?filename=x.png", "/upload/image", "/history", "/ws", "/", "/distributed/results/p/1"])
async def test_every_route_without_the_token_is_refused(client: TestClient, path: str) -> None:
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {TOKEN}"}, {"Authorization": f"Bearer {TOKEN[:-1]}"}):
        response = await client.get(path, headers=headers)
        assert response.status == 401, (path, headers)
        assert "comfyui" not in await response.text()


async def test_the_token_opens_every_route(client: TestClient) -> None:
    response = await client.post("/prompt", headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status == 200 and await response.text() == "comfyui"


async def test_the_alive_route_answers_anyone_and_says_nothing(client: TestClient) -> None:
    response = await client.get("/distributed/alive")
    assert response.status == 200 and await response.text() == "ok"
    assert (await client.post("/distributed/alive")).status == 401


def test_the_comparison_takes_the_same_time_however_much_matches() -> None:
    assert "hmac.compare_digest" in inspect.getsource(lock.worker_guard)


def test_no_variable_means_no_lock() -> None:
    assert lock.worker_token({}) is None and lock.worker_token({"DISTRIBUTED_WORKER_TOKEN": "  "}) is None
