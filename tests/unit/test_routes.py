"""The origin check that keeps other web sites from driving the master."""

from __future__ import annotations

from aiohttp.test_utils import make_mocked_request

from distributed.api.access import foreign_origin


def _request(headers: dict[str, str]):
    return make_mocked_request("POST", "/distributed/workers", headers={"Host": "127.0.0.1:8188", **headers})


def test_program_without_origin_is_allowed() -> None:
    assert foreign_origin(_request({})) is None


def test_same_origin_panel_request_with_header_is_allowed() -> None:
    assert foreign_origin(_request({"Origin": "http://127.0.0.1:8188", "X-Distributed-Request": "1"})) is None


def test_other_origin_is_refused_even_with_the_header() -> None:
    assert "refused" in foreign_origin(_request({"Origin": "http://evil.example", "X-Distributed-Request": "1"}))


def test_null_origin_is_refused() -> None:
    assert foreign_origin(_request({"Origin": "null", "X-Distributed-Request": "1"})) is not None


def test_same_origin_without_header_is_refused() -> None:
    assert "X-Distributed-Request" in foreign_origin(_request({"Origin": "http://127.0.0.1:8188"}))


def test_cross_site_fetch_metadata_is_refused() -> None:
    assert foreign_origin(_request({"Sec-Fetch-Site": "cross-site"})) is not None
