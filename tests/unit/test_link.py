"""The link monitor's choice of encoding: raw on fast links, zlib where transfer time dominates."""

from __future__ import annotations

from distributed.transport.link import CodecCost, choose_encoding


def test_unknown_bandwidth_chooses_raw() -> None:
    assert choose_encoding(None)[0] == "raw"


def test_lan_bandwidth_chooses_raw() -> None:
    assert choose_encoding(1e9 / 8)[0] == "raw"


def test_slow_link_chooses_compression_and_says_why() -> None:
    encoding, reason = choose_encoding(100e6 / 8)
    assert encoding == "zlib"
    assert "100 Mbit/s" in reason


def test_measurements_override_the_default_table() -> None:
    useless = CodecCost(ratio=1.0, encode_bytes_per_s=1e6, decode_bytes_per_s=1e6)
    raw = CodecCost(ratio=1.0, encode_bytes_per_s=1e10, decode_bytes_per_s=1e10)
    assert choose_encoding(1e6, {"raw": raw, "zlib": useless})[0] == "raw"
