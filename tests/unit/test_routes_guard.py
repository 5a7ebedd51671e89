"""The API's access policy (shared token, protected reads) and the extra_args path rule."""

from __future__ import annotations

import json

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from distributed.errors import ConfigError
from distributed.routes import AccessPolicy, check_extra_args, path_arguments

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


@pytest.mark.parametrize("extra_args", [
    "--output-directory /etc",
    "--output-directory=/etc",
    "--output-dir /etc",
    "--lowvram --input-directory '/home/someone else'",
    "--extra-model-paths-config /tmp/evil.yaml",
    "--user-directory /root",
    "--front-end-root /",
    "--database-url sqlite:////etc/x.db",
])
def test_api_extra_args_may_not_add_a_path_flag(extra_args: str) -> None:
    with pytest.raises(ConfigError) as raised:
        check_extra_args(extra_args)
    assert raised.value.field == "extra_args" and "hand edit" in str(raised.value)


def test_path_flag_written_by_hand_is_kept_when_the_api_leaves_it_as_is() -> None:
    stored = "--output-directory /data/out --lowvram"
    check_extra_args("--lowvram --output-directory /data/out --preview-method auto", stored)


def test_path_flag_written_by_hand_cannot_be_redirected_through_the_api() -> None:
    with pytest.raises(ConfigError):
        check_extra_args("--output-directory /etc", "--output-directory /data/out")


def test_ordinary_flags_and_shell_text_pass_the_path_rule_as_literal_words() -> None:
    check_extra_args("--lowvram --preview-method auto '; rm -rf /' '$(touch /tmp/x)'")
    assert path_arguments("--lowvram ; rm -rf / $(id)") == set()


def test_unbalanced_quotes_in_extra_args_name_the_field() -> None:
    with pytest.raises(ConfigError) as raised:
        check_extra_args("--lowvram 'unclosed")
    assert raised.value.field == "extra_args"
