"""POST /interrupt naming a prompt a worker renders stops it there and never reaches ComfyUI's handler
(which would interrupt the master's own prompt); every other interrupt goes to ComfyUI unchanged."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from distributed.comfy.interrupts import interrupt_middleware

ON_WORKER = "prompt-on-a-worker"


@dataclass
class Seen:
    by_comfyui: list[Any] = field(default_factory=list)
    by_router: list[str] = field(default_factory=list)
    global_by_router: int = 0

    def interrupt_routed(self, prompt_id: str) -> bool:
        self.by_router.append(prompt_id)
        return prompt_id == ON_WORKER

    def interrupt_all_routed(self) -> None:
        self.global_by_router += 1


@pytest.fixture
def seen() -> Seen:
    return Seen()


@pytest.fixture
async def client(aiohttp_client: Callable[[web.Application], Awaitable[TestClient]], seen: Seen) -> TestClient:
    async def comfyui_interrupt(request: web.Request) -> web.Response:
        try:
            seen.by_comfyui.append(await request.json())
        except ValueError:
            seen.by_comfyui.append(None)
        return web.Response(status=200)

    app = web.Application(middlewares=[interrupt_middleware(seen.interrupt_routed, seen.interrupt_all_routed)])
    app.router.add_post("/interrupt", comfyui_interrupt)
    app.router.add_post("/api/interrupt", comfyui_interrupt)
    return await aiohttp_client(app)


@pytest.mark.parametrize("path", ["/interrupt", "/api/interrupt"])
async def test_an_interrupt_of_a_prompt_on_a_worker_stops_it_there_and_not_the_master(client: TestClient, seen: Seen, path: str) -> None:
    response = await client.post(path, json={"prompt_id": ON_WORKER})

    assert response.status == 200
    assert seen.by_router == [ON_WORKER] and seen.by_comfyui == []


async def test_an_interrupt_of_another_prompt_reaches_comfyui_with_its_body(client: TestClient, seen: Seen) -> None:
    response = await client.post("/interrupt", json={"prompt_id": "the-masters-own"})

    assert response.status == 200 and seen.by_comfyui == [{"prompt_id": "the-masters-own"}] and seen.global_by_router == 0


@pytest.mark.parametrize("body", [None, b"not json", b"[1]", b'{"prompt_id": 7}'])
async def test_a_global_or_odd_interrupt_reaches_comfyui_and_the_routers_global_stop(client: TestClient, seen: Seen,
                                                                                    body: bytes | None) -> None:
    response = await client.post("/interrupt", data=body)

    assert response.status == 200 and len(seen.by_comfyui) == 1 and seen.by_router == [] and seen.global_by_router == 1
