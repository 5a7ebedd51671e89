"""The API's access policy: the shared token, protected reads, and callers on other machines."""

from __future__ import annotations

import json
from unittest import mock

from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from distributed.api.access import AccessPolicy

TOKEN = "s3cret-token-for-tests"


def _peer(address: str) -> mock.Mock:
    """A transport whose peer is `address`, as the server's socket would report it."""
    transport = mock.Mock()
    transport.get_extra_info.side_effect = lambda name, default=None: (address, 50000) if name == "peername" else default
    return transport


def _request(method: str = "POST", **headers: str) -> web.Request:
    return make_mocked_request(method, "/distributed/workers", headers={"Host": "127.0.0.1:8188", **headers}, transport=_peer("127.0.0.1"))


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


# --- DNS rebinding: the Host a page reached the master by ------------------------------------------------

REBOUND = {"Host": "rebind.example:8188", "Origin": "http://rebind.example:8188", "Sec-Fetch-Site": "same-origin",
           "X-Distributed-Request": "1"}
"""What a page served from rebind.example sends once its name points at 127.0.0.1: same-origin in every header."""


def _at(method: str, **headers: str) -> web.Request:
    return make_mocked_request(method, "/distributed/workers", headers=headers, transport=_peer("127.0.0.1"))


async def test_a_rebound_host_name_is_refused_on_changes_and_reads() -> None:
    policy = AccessPolicy()
    change = await policy.guard(_ok)(_at("POST", **REBOUND))
    read = await policy.reader(_ok)(_at("GET", **REBOUND))

    assert change.status == 403 and read.status == 403
    message = json.loads(change.body)["error"]
    assert "rebind.example" in message and "master.allowed_hosts" in message and "DISTRIBUTED_ALLOWED_HOSTS" in message


async def test_ip_addresses_and_localhost_are_answered_as_the_panel_sends_them() -> None:
    for host in ("127.0.0.1:8188", "localhost:8188", "LOCALHOST", "[::1]:8188", "192.168.1.20:8188", "10.0.0.7"):
        panel = {"Host": host, "Origin": f"http://{host}", "X-Distributed-Request": "1"}
        assert await _status(AccessPolicy().guard(_ok), _at("POST", **panel)) == 200, host
        assert await _status(AccessPolicy().reader(_ok), _at("GET", Host=host)) == 200, host


async def test_a_name_is_answered_once_the_environment_or_workers_json_allows_it() -> None:
    by_env = AccessPolicy.from_environ({"DISTRIBUTED_ALLOWED_HOSTS": " studio.lan , Rebind.Example "})
    by_setting = AccessPolicy.from_environ({}, allowed_hosts=lambda: ["rebind.example"])

    assert await _status(by_env.guard(_ok), _at("POST", **REBOUND)) == 200
    assert await _status(by_setting.reader(_ok), _at("GET", **REBOUND)) == 200
    assert await _status(by_env.reader(_ok), _at("GET", Host="other.lan")) == 403


async def test_a_host_header_that_is_no_plain_host_is_refused() -> None:
    for host in ("evil.example@127.0.0.1", "127.0.0.1 evil", "[zz::1]:80", "127.0.0.1:8188/x"):
        assert await _status(AccessPolicy().reader(_ok), _at("GET", Host=host)) == 403, host


# --- --enable-cors-header: every page could read an answer ------------------------------------------------


async def test_with_cors_enabled_a_read_from_another_origin_is_refused() -> None:
    policy = AccessPolicy(cors_enabled=True)

    assert await _status(policy.reader(_ok), _at("GET", Host="127.0.0.1:8188", Origin="http://evil.example")) == 403
    assert await _status(policy.reader(_ok), _at("GET", Host="127.0.0.1:8188", **{"Sec-Fetch-Site": "cross-site"})) == 403
    assert await _status(policy.reader(_ok), _at("GET", Host="127.0.0.1:8188")) == 200  # the panel's own read, or a program
    assert await _status(policy.reader(_ok), _at("GET", Host="127.0.0.1:8188", Origin="http://127.0.0.1:8188")) == 200


async def test_results_route_of_a_worker_takes_its_token_but_no_host_rule() -> None:
    policy = AccessPolicy.for_results({"DISTRIBUTED_API_TOKEN": TOKEN})

    assert await _status(policy.guard(_ok), _at("GET", Host="gpu.example:443")) == 401
    assert await _status(policy.guard(_ok), _at("GET", Host="gpu.example:443", Authorization=f"Bearer {TOKEN}")) == 200
    assert await _status(policy.guard(_ok), _at("GET", Host="gpu.example", Origin="http://evil.example",
                                                Authorization=f"Bearer {TOKEN}")) == 403


# --- callers on other machines ------------------------------------------------------------------------------


def _from(address: str, method: str = "POST", **headers: str) -> web.Request:
    return make_mocked_request(method, "/distributed/workers", headers={"Host": "192.168.1.20:8188", **headers},
                               transport=_peer(address))


async def test_another_machine_is_refused_everything_when_no_token_is_set_saying_how_to_set_one() -> None:
    policy = AccessPolicy()
    change = await policy.guard(_ok)(_from("192.168.1.7"))
    read = await policy.reader(_ok)(_from("192.168.1.7", "GET"))

    assert change.status == 403 and read.status == 403
    assert "DISTRIBUTED_API_TOKEN" in json.loads(change.body)["error"]


async def test_another_machine_needs_the_token_on_reads_too_and_is_answered_with_it() -> None:
    policy = AccessPolicy(TOKEN)

    assert await _status(policy.reader(_ok), _from("10.0.0.9", "GET")) == 401
    assert await _status(policy.guard(_ok), _from("10.0.0.9")) == 401
    assert await _status(policy.reader(_ok), _from("10.0.0.9", "GET", Authorization=f"Bearer {TOKEN}")) == 200
    assert await _status(policy.guard(_ok), _from("10.0.0.9", Authorization=f"Bearer {TOKEN}")) == 200


async def test_loopback_callers_keep_todays_rules_in_every_spelling() -> None:
    for address in ("127.0.0.1", "127.8.9.1", "::1", "::ffff:127.0.0.1"):
        assert await _status(AccessPolicy().guard(_ok), _from(address)) == 200, address
        assert await _status(AccessPolicy(TOKEN).reader(_ok), _from(address, "GET")) == 200, address
    assert await _status(AccessPolicy().guard(_ok), _from("::ffff:10.0.0.9")) == 403


async def test_a_request_without_a_peer_address_counts_as_another_machine() -> None:
    request = make_mocked_request("GET", "/distributed/workers", headers={"Host": "127.0.0.1:8188"})

    assert await _status(AccessPolicy().reader(_ok), request) == 403


async def test_a_privileged_read_needs_the_token_from_every_caller_and_a_token_to_exist() -> None:
    assert await _status(AccessPolicy().privileged(_ok), _request("GET")) == 403
    assert await _status(AccessPolicy(TOKEN).privileged(_ok), _request("GET")) == 401
    assert await _status(AccessPolicy(TOKEN).privileged(_ok), _request("GET", Authorization=f"Bearer {TOKEN}")) == 200


async def test_the_results_route_of_a_worker_answers_masters_on_other_machines() -> None:
    policy = AccessPolicy.for_results({})

    assert await _status(policy.guard(_ok), _from("10.0.0.9", "GET", Host="gpu.example")) == 200
