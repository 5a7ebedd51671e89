"""Worker connections: auth headers on every request and the websocket, retries, secrets masked in the API.

A small fake worker (aiohttp test server) stands in for ComfyUI's few routes used here; the real
ComfyUI behind real proxies is covered in tests/integration/test_remote_workers.py.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from pydantic import ValidationError

from distributed.config.models import WorkerConfig
from distributed.config.secrets import MASK, keep_masked_secrets, public_view
from distributed.errors import ConfigError, WorkerOffline
from distributed.workers.pool import ClientPool

Serve = Callable[[web.Application], Awaitable[TestServer]]
TOKEN = "s3cret-token-abcd"


def worker_at(server: TestServer, **fields: object) -> WorkerConfig:
    return WorkerConfig(id="w", name="Fake", host="127.0.0.1", port=server.port, **fields)


def fake_worker(seen: list[dict[str, str]], statuses: list[int] | None = None) -> web.Application:
    """Answers /system_stats (with `statuses` first, if given) and /ws, recording request headers."""
    queue = list(statuses or [])

    async def stats(request: web.Request) -> web.Response:
        seen.append(dict(request.headers))
        if queue:
            return web.Response(status=queue.pop(0))
        return web.json_response({"system": {"comfyui_version": "0.3.75", "os": "posix"}, "devices": []})

    async def ws(request: web.Request) -> web.WebSocketResponse:
        seen.append(dict(request.headers))
        socket = web.WebSocketResponse()
        await socket.prepare(request)
        await socket.send_json({"type": "status", "data": {}})
        await socket.close()
        return socket

    app = web.Application()
    app.router.add_get("/system_stats", stats)
    app.router.add_get("/ws", ws)
    return app


async def test_token_and_custom_headers_are_sent_on_requests_and_the_websocket(aiohttp_server: Serve) -> None:
    seen: list[dict[str, str]] = []
    server = await aiohttp_server(fake_worker(seen))
    pool = ClientPool()
    try:
        client = pool.client(worker_at(server, auth_token=TOKEN, headers={"X-Tunnel-Key": "k-123456789012"}))
        await client.system_stats()
        async with client.events("c1", heartbeat=5) as stream:
            assert (await stream.receive(5)).type == "status"
    finally:
        await pool.close()

    assert [h.get("Authorization") for h in seen] == [f"Bearer {TOKEN}"] * 2
    assert [h.get("X-Tunnel-Key") for h in seen] == ["k-123456789012"] * 2


async def test_refused_token_is_reported_as_an_auth_problem(aiohttp_server: Serve) -> None:
    server = await aiohttp_server(fake_worker([], statuses=[401]))
    pool = ClientPool()
    try:
        with pytest.raises(WorkerOffline) as caught:
            await pool.client(worker_at(server)).system_stats()
    finally:
        await pool.close()

    assert caught.value.stage == "auth"
    assert "HTTP 401: authentication required or refused" in caught.value.cause


async def test_proxy_gateway_errors_on_a_get_are_retried(aiohttp_server: Serve) -> None:
    seen: list[dict[str, str]] = []
    server = await aiohttp_server(fake_worker(seen, statuses=[502, 503]))
    pool = ClientPool()
    try:
        stats = await pool.client(worker_at(server)).system_stats()
    finally:
        await pool.close()

    assert stats["system"]["comfyui_version"] == "0.3.75" and len(seen) == 3


async def test_changed_token_gets_a_new_session(aiohttp_server: Serve) -> None:
    seen: list[dict[str, str]] = []
    server = await aiohttp_server(fake_worker(seen))
    pool = ClientPool()
    try:
        await pool.client(worker_at(server, auth_token="first-token-0000")).system_stats()
        await pool.client(worker_at(server, auth_token="second-token-1111")).system_stats()
    finally:
        await pool.close()

    assert [h["Authorization"] for h in seen] == ["Bearer first-token-0000", "Bearer second-token-1111"]


async def test_unreadable_ca_bundle_is_reported_as_a_tls_problem(tmp_path) -> None:
    pool = ClientPool()
    try:
        worker = WorkerConfig(id="w", name="Cloud", type="cloud", url="https://gpu.example", tls_ca_file=str(tmp_path / "none.pem"))
        client = pool.client(worker)
        with pytest.raises(WorkerOffline) as caught:
            await client.system_stats()
    finally:
        await pool.close()

    assert caught.value.stage == "tls" and "none.pem" in caught.value.cause


def test_public_view_masks_the_token_and_header_values() -> None:
    worker = WorkerConfig(id="w", name="W", port=1, auth_token=TOKEN, headers={"X-Key": "short"})
    view = public_view(worker)

    assert view["auth_token"] == MASK + "abcd"
    assert view["headers"] == {"X-Key": MASK}
    assert TOKEN not in str(view)


def test_public_view_warns_when_tls_verification_is_off() -> None:
    worker = WorkerConfig(id="w", name="W", type="cloud", url="https://gpu.example", tls_verify=False)

    assert "verification is off" in public_view(worker)["warnings"][0]


def test_masked_values_sent_back_keep_the_stored_secrets() -> None:
    worker = WorkerConfig(id="w", name="W", port=1, auth_token=TOKEN, headers={"X-Key": "k-123456789012", "X-Old": "gone-soon-123"})
    view = public_view(worker)
    changes = keep_masked_secrets(worker, {"auth_token": view["auth_token"], "headers": {"X-Key": view["headers"]["X-Key"], "X-New": "v"}})

    assert changes == {"auth_token": TOKEN, "headers": {"X-Key": "k-123456789012", "X-New": "v"}}


def test_a_new_token_replaces_the_stored_one() -> None:
    worker = WorkerConfig(id="w", name="W", port=1, auth_token=TOKEN)

    assert keep_masked_secrets(worker, {"auth_token": "another-token"})["auth_token"] == "another-token"


def test_a_masked_value_is_never_stored_as_a_secret() -> None:
    with pytest.raises(ValidationError, match="masked value"):
        WorkerConfig(id="w", name="W", port=1, auth_token=MASK + "abcd")


# --- secrets stay with the address they were saved for ----------------------------------------------------


@pytest.mark.parametrize("change", [{"url": "https://attacker.example"}, {"host": "10.9.9.9"}, {"port": 9999},
                                    {"type": "cloud", "url": "http://127.0.0.1:1"}])
def test_masked_secrets_do_not_follow_a_change_of_address(change: dict[str, object]) -> None:
    worker = WorkerConfig(id="w", name="W", port=1, auth_token=TOKEN, headers={"CF-Access-Client-Secret": "cf-secret-123456"})
    view = public_view(worker)

    with pytest.raises(ConfigError) as token:
        keep_masked_secrets(worker, {**change, "auth_token": view["auth_token"]})
    with pytest.raises(ConfigError) as header:
        keep_masked_secrets(worker, {**change, "headers": view["headers"]})

    assert token.value.field == "auth_token" and "enter it again" in str(token.value)
    assert header.value.field == "headers.CF-Access-Client-Secret"


def test_secrets_typed_again_for_a_new_address_are_taken() -> None:
    worker = WorkerConfig(id="w", name="W", port=1, auth_token=TOKEN)

    assert keep_masked_secrets(worker, {"port": 2, "auth_token": "typed-again-0000"})["auth_token"] == "typed-again-0000"


# --- credentials in a url -----------------------------------------------------------------------------------


def test_credentials_in_a_worker_url_are_masked_and_kept_when_sent_back_masked() -> None:
    worker = WorkerConfig(id="w", name="W", type="cloud", url="https://alice:pa55word-secret@gpu.example/pod")
    view = public_view(worker)

    assert "pa55word" not in str(view) and view["url"].startswith(f"https://{MASK}") and view["url"].endswith("@gpu.example/pod")
    assert keep_masked_secrets(worker, {"url": view["url"], "name": "Renamed"})["url"] == worker.url
    with pytest.raises(ValidationError, match="masked"):
        WorkerConfig(id="w", name="W", type="cloud", url=view["url"].replace("gpu.example", "attacker.example"))


def test_secrets_over_plain_http_are_warned_about_except_on_loopback() -> None:
    lan = public_view(WorkerConfig(id="w", name="W", host="192.168.1.9", port=8188, auth_token=TOKEN))
    loopback = public_view(WorkerConfig(id="w", name="W", host="127.0.0.1", port=8188, auth_token=TOKEN))
    https = public_view(WorkerConfig(id="w", name="W", type="cloud", url="https://gpu.example", auth_token=TOKEN))

    assert any("plain http://" in warning and "auth token" in warning for warning in lan["warnings"])
    assert loopback["warnings"] == [] and https["warnings"] == []


# --- no redirects: custom headers would go along -----------------------------------------------------------


async def test_a_redirect_is_refused_so_custom_headers_never_reach_another_host(aiohttp_server: Serve) -> None:
    seen: list[dict[str, str]] = []
    elsewhere = await aiohttp_server(fake_worker(seen))

    async def redirect(request: web.Request) -> web.Response:
        raise web.HTTPFound(f"http://127.0.0.1:{elsewhere.port}{request.path_qs}")

    app = web.Application()
    app.router.add_get("/{path:.*}", redirect)
    worker = await aiohttp_server(app)
    pool = ClientPool()
    try:
        client = pool.client(worker_at(worker, auth_token=TOKEN, headers={"CF-Access-Client-Secret": "cf-secret-123456"}))
        with pytest.raises(WorkerOffline) as plain:
            await client.system_stats()
        with pytest.raises(WorkerOffline) as websocket:
            async with client.events("c1", heartbeat=5):
                pass
    finally:
        await pool.close()

    assert seen == []
    assert "redirect" in plain.value.cause and f"127.0.0.1:{elsewhere.port}" in plain.value.cause
    assert "redirect" in websocket.value.cause
