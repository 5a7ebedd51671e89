"""The API's access policy: the shared token and protected reads."""

from __future__ import annotations

import json

from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from distributed.api.access import AccessPolicy

TOKEN = "s3cret-token-for-tests"


def _request(method: str = "POST", **headers: str) -> web.Request:
    return make_mocked_request(method, "/distributed/workers", headers={"Host": "127.0.0.1:8188", **headers})


async def _ok(request: web.Request) -> web.Response:
    return web.json_response({"ok": True})


async def _status(handler, request: web.Request) -> int:
    return (await handler(request)).status


def test_policy_without_token_env_has_no_token() -> None:
    assert AccessPolicy.from_environ({}) == AccessPolicy(None, False)


def test_protected_reads_need_a_token_to_mean_anything() -> None:
    assert AccessPolicy.from_environ({"DISTRIBUTED_API_TOKEN_READS": "1"}).protect_reads is False
    assert AccessPolicy.from_environ({"DISTRIBUTED_API_TOKEN": TOKEN, "DISTRIBUTED_API_TOKEN_READS": "1"}).protect_reads is True


async def test_change_without_token_is_allowed_when_no_token_is_configured() -> None:
    assert await _status(AccessPolicy().guard(_ok), _request()) == 200


async def test_change_without_the_configured_token_gets_401_naming_both_headers() -> None:
    response = await AccessPolicy(TOKEN).guard(_ok)(_request())

    assert response.status == 401 and response.headers["WWW-Authenticate"].startswith("Bearer")
    message = json.loads(response.body)["error"]
    assert "Authorization: Bearer" in message and "X-Distributed-Token" in message


async def test_wrong_token_gets_401() -> None:
    assert await _status(AccessPolicy(TOKEN).guard(_ok), _request(Authorization="Bearer nope")) == 401


async def test_token_is_accepted_as_bearer_or_in_its_own_header() -> None:
    guarded = AccessPolicy(TOKEN).guard(_ok)

    assert await _status(guarded, _request(Authorization=f"Bearer {TOKEN}")) == 200
    assert await _status(guarded, _request(Authorization=f"bearer {TOKEN}")) == 200
    assert await _status(guarded, _request(**{"X-Distributed-Token": TOKEN})) == 200


async def test_foreign_origin_is_refused_even_with_the_right_token() -> None:
    request = _request(Origin="http://evil.example", Authorization=f"Bearer {TOKEN}", **{"X-Distributed-Request": "1"})
    assert await _status(AccessPolicy(TOKEN).guard(_ok), request) == 403


async def test_reads_stay_open_with_a_token_unless_protected() -> None:
    assert await _status(AccessPolicy(TOKEN).reader(_ok), _request("GET")) == 200
    assert await _status(AccessPolicy(TOKEN, protect_reads=True).reader(_ok), _request("GET")) == 401
    assert await _status(AccessPolicy(TOKEN, protect_reads=True).reader(_ok), _request("GET", Authorization=f"Bearer {TOKEN}")) == 200
