"""The fast path's pieces without ComfyUI: prompt rewrite, sink node, installed route, link choice."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from aiohttp import web
from aiohttp.test_utils import TestClient

from distributed.api.access import AccessPolicy
from distributed.comfy.result_sink import install, sink_node, wire_array
from distributed.transport import wire
from distributed.transport.fetch import as_images
from distributed.transport.link import LinkMonitor
from distributed.transport.result_store import ResultStore
from distributed.transport.sink import RESULT_UI_KEY, SINK_CLASS, sink_prompt

AiohttpClient = Callable[[web.Application], Awaitable[TestClient]]


def share_prompt() -> dict:
    return {
        "2": {"class_type": "DistTestNoise", "inputs": {"seed": 1, "width": 8, "height": 8, "batch_size": 1}},
        "3": {"class_type": "PreviewImage", "inputs": {"images": ["2", 0]}},
    }


def test_sink_replaces_the_stock_output_under_the_collector_id() -> None:
    prompt = share_prompt()
    rewritten = sink_prompt(prompt, ("3",), {"3": "float32"}, "zlib")

    assert rewritten["3"] == {"class_type": SINK_CLASS, "inputs": {"images": ["2", 0], "precision": "float32", "encoding": "zlib"}}
    assert rewritten["2"] == prompt["2"] and prompt["3"]["class_type"] == "PreviewImage"


def test_audio_output_feeds_the_sinks_audio_input() -> None:
    prompt = {"1": {"class_type": "EmptyAudio", "inputs": {}}, "3": {"class_type": "PreviewAudio", "inputs": {"audio": ["1", 0]}}}

    assert sink_prompt(prompt, ("3",), {}, "raw")["3"]["inputs"] == {"audio": ["1", 0], "precision": "uint8", "encoding": "raw"}


def test_collector_without_a_precision_gets_uint8() -> None:
    assert sink_prompt(share_prompt(), ("3",), {}, "raw")["3"]["inputs"]["precision"] == "uint8"


def test_unknown_precision_is_refused_naming_the_collector() -> None:
    with pytest.raises(ValueError, match="collector 3"):
        sink_prompt(share_prompt(), ("3",), {"3": "int4"}, "raw")


def test_uint8_quantises_exactly_as_preview_image_does() -> None:
    images = torch.rand([2, 5, 7, 3], generator=torch.Generator().manual_seed(3)) * 1.2 - 0.1

    assert np.array_equal(wire_array(images, "uint8"), np.clip(255.0 * images.numpy(), 0, 255).astype(np.uint8))


def test_float_precisions_keep_the_tensor_values() -> None:
    images = torch.rand([1, 4, 4, 3], generator=torch.Generator().manual_seed(4))

    assert np.array_equal(wire_array(images, "float32"), images.numpy())
    assert np.array_equal(wire_array(images, "float16"), images.half().numpy())


def test_sink_stores_images_under_the_prompt_and_node_and_describes_them() -> None:
    store = ResultStore()
    node = sink_node(store, lambda: "prompt-1")()
    images = torch.rand([3, 4, 5, 3], generator=torch.Generator().manual_seed(5))
    answer = node.keep("float32", "raw", images=images, unique_id="9")

    entry = store.get("prompt-1", "9")
    assert entry is not None and np.array_equal(entry.array, images.numpy())
    assert answer == {"ui": {RESULT_UI_KEY: [{"key": "9", "kind": "images", "dtype": "float32", "shape": [3, 4, 5, 3]}]}}


def test_sink_always_runs_again() -> None:
    assert sink_node(ResultStore()).IS_CHANGED(precision="uint8") != sink_node(ResultStore()).IS_CHANGED(precision="uint8")


def server_with_fast_path(store: ResultStore) -> web.Application:
    server = SimpleNamespace(routes=web.RouteTableDef(), app=web.Application())
    install(server, AccessPolicy.for_results({}).guard, store)
    server.app.add_routes(server.routes)
    return server.app


async def test_audio_waveform_round_trips_bit_exact_through_the_route(aiohttp_client: AiohttpClient) -> None:
    store = ResultStore()
    waveform = torch.randn([2, 2, 44_101], generator=torch.Generator().manual_seed(6))
    answer = sink_node(store, lambda: "p")().keep("uint8", "zlib", audio={"waveform": waveform, "sample_rate": 44100}, unique_id="7")
    client = await aiohttp_client(server_with_fast_path(store))

    [described] = answer["ui"][RESULT_UI_KEY]
    response = await client.get(f"/distributed/results/p/{described['key']}")
    decoder = wire.Decoder("test", expected_dtype=described["dtype"], expected_shape=tuple(described["shape"]))
    array = await wire.read_stream(response.content, decoder)

    assert described["kind"] == "audio" and described["sample_rate"] == 44100
    assert np.array_equal(array, waveform.numpy())


async def test_results_route_refuses_another_web_origin_and_keeps_the_result(aiohttp_client: AiohttpClient) -> None:
    store = ResultStore()
    store.put("p", "3", np.zeros((1, 2, 2, 3), dtype=np.uint8))
    client = await aiohttp_client(server_with_fast_path(store))

    response = await client.get("/distributed/results/p/3", headers={"Origin": "http://evil.example"})

    assert response.status == 403
    assert store.get("p", "3") is not None


def test_uint8_batch_becomes_the_floats_png_decoding_gives() -> None:
    batch = np.random.default_rng(8).integers(0, 256, (2, 3, 5, 3), dtype=np.uint8)

    assert np.array_equal(as_images(batch), batch.astype(np.float32) / np.float32(255.0))


def test_link_without_measurements_uses_raw() -> None:
    links = LinkMonitor()

    assert links.choose("w", "uint8") == "raw"
    assert "unknown" in links.report()["w"]["reason"]


def test_slow_link_measured_from_transfers_switches_to_zlib_and_says_why() -> None:
    links = LinkMonitor()
    links.observe("w", 50_000_000, 8.0)  # 50 Mbit/s

    assert links.choose("w", "uint8") == "zlib"
    report = links.report()["w"]
    assert report["bandwidth_bytes_per_s"] == pytest.approx(6.25e6) and "50 Mbit/s" in report["reason"]


def test_loopback_speed_keeps_raw() -> None:
    links = LinkMonitor()
    links.observe("w", 400_000_000, 0.5)

    assert links.choose("w", "float32") == "raw"


def test_small_transfers_do_not_count_as_bandwidth() -> None:
    links = LinkMonitor()
    links.observe("w", 10_000, 0.5)
    links.choose("w", "uint8")

    assert links.report()["w"]["bandwidth_bytes_per_s"] is None
