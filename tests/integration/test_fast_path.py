"""The fast result path with real ComfyUIs: a worker that runs this extension, one that does not.

The worker with the extension runs in local-worker mode (COMFYUI_DISTRIBUTED_WORKER_ID set), as a
worker the master launched would. A TCP relay that corrupts or cuts one result answer stands in for
a bad link.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import numpy as np
import pytest
import torch

from distributed.config.models import WorkerConfig
from distributed.config.registry import Registry
from distributed.shares import ShareWork
from distributed.transport.runner import ShareRunner
from distributed.transport.sink import RESULT_UI_KEY, SINK_CLASS
from distributed.workers.orphans import ShareOwner
from distributed.workers.pool import ClientPool
from tests.conftest import OUTPUT_ROOT, Cluster
from tests.harness import ComfyInstance, reset_dir, running
from tests.integration.workflows import (
    error_message,
    noise_prompt,
    read_stamp,
    read_tone_seed,
    saved_images,
    seed_stamp_prompt,
    tone_prompt,
)
from tests.proxy import BackgroundServer

RESULTS_REQUEST = b"GET /distributed/results/"


@pytest.fixture(scope="module")
def fast_cluster() -> Iterator[Cluster]:
    """Master + `fast` (this extension, worker mode) + `stock` (test nodes only): three processes."""
    base = reset_dir(OUTPUT_ROOT / "fast-path")
    workers = {
        "fast": ComfyInstance("worker-fast", base / "worker-fast", with_extension=True,
                              env={"COMFYUI_DISTRIBUTED_WORKER_ID": "fast"}),
        "stock": ComfyInstance("worker-stock", base / "worker-stock"),
    }
    workers_file = base / "workers.json"
    master = ComfyInstance("master", base / "master", with_extension=True, env={"DISTRIBUTED_WORKERS_FILE": str(workers_file)})
    with running(master, *workers.values()):
        yield Cluster(master, workers, workers_file)


def expected_noise(seed: int, batch: int, height: int, width: int) -> np.ndarray:
    """What DistTestNoise renders on the worker (same torch, same generator)."""
    return torch.rand([batch, height, width, 3], generator=torch.Generator().manual_seed(seed)).numpy()


def as_png_would_quantise(images: np.ndarray) -> np.ndarray:
    """PreviewImage's quantisation, then the master's decode (transport/fetch.py decode_png)."""
    return np.clip(255.0 * images, 0, 255).astype(np.uint8).astype(np.float32) / np.float32(255.0)


async def run_share(worker: ComfyInstance, prompt: dict, collector: str, precision: str, tmp_path: Path) -> np.ndarray:
    pool = ClientPool()
    runner = ShareRunner(Registry(tmp_path / "workers.json"), pool, ShareOwner("fastpathtest"))
    worker_config = WorkerConfig(id="fast", name="Worker fast", port=worker.port)
    try:
        async with asyncio.timeout(120):
            results = (await runner.run(ShareWork(prompt, (collector,), precisions={collector: precision}), worker_config, 1,
                                        lambda _: None)).outputs
    finally:
        await pool.close()
    return results[collector]


def noise_share(seed: int, batch: int, height: int, width: int) -> dict:
    """A share prompt as the planner writes it: the collector replaced by PreviewImage, same node id."""
    return {
        "2": {"class_type": "DistTestNoise", "inputs": {"seed": seed, "width": width, "height": height, "batch_size": batch}},
        "3": {"class_type": "PreviewImage", "inputs": {"images": ["2", 0]}},
    }


@pytest.mark.parametrize("batch", [1, 16])
async def test_float32_batch_arrives_bit_exact_from_a_worker_with_the_extension(
    fast_cluster: Cluster, batch: int, tmp_path: Path
) -> None:
    images = await run_share(fast_cluster.workers["fast"], noise_share(31 + batch, batch, 771, 1023), "3", "float32", tmp_path)

    assert images.dtype == np.float32
    assert np.array_equal(images, expected_noise(31 + batch, batch, 771, 1023))


@pytest.mark.parametrize("batch", [1, 16])
async def test_uint8_batch_arrives_exactly_as_the_png_path_quantises_it(fast_cluster: Cluster, batch: int, tmp_path: Path) -> None:
    images = await run_share(fast_cluster.workers["fast"], noise_share(41 + batch, batch, 771, 1023), "3", "uint8", tmp_path)

    assert np.array_equal(images, as_png_would_quantise(expected_noise(41 + batch, batch, 771, 1023)))


def history_outputs(worker: ComfyInstance) -> list[dict]:
    status, history = worker.get("/history")
    assert status == 200
    return [output for entry in history.values() for output in entry["outputs"].values()]


def test_worker_without_the_extension_keeps_the_png_path_in_the_same_run(fast_cluster: Cluster) -> None:
    fast_cluster.use_workers("fast", "stock", participate=False)
    entry = fast_cluster.run(seed_stamp_prompt(seed=600, batch_size=2))

    assert [read_stamp(p) for p in saved_images(entry, fast_cluster.master.output_dir)] == [(600, 0), (600, 1), (601, 0), (601, 1)]
    participants = {s["participant"] for s in fast_cluster.job(entry)["shares"]}
    assert participants == {"fast", "stock"}
    assert any(RESULT_UI_KEY in output for output in history_outputs(fast_cluster.workers["fast"]))
    assert all("images" in output and RESULT_UI_KEY not in output for output in history_outputs(fast_cluster.workers["stock"]))


def test_audio_is_collected_in_share_order_and_a_stock_worker_is_skipped_for_it(fast_cluster: Cluster) -> None:
    fast_cluster.use_workers("fast", "stock", participate=True)
    entry = fast_cluster.run(tone_prompt(seed=900, samples=4000, extra=123, sample_rate=22050))

    saved = entry["outputs"]["4"]["audio_arrays"][0]
    waveform = np.load(fast_cluster.master.output_dir / saved["filename"])
    assert saved["sample_rate"] == 22050
    assert [read_tone_seed(clip) for clip in waveform] == [900, 901, 902]
    assert waveform.shape == (3, 1, 4123)  # the odd seed's clip is 123 samples longer; the others are padded
    assert not waveform[0, 0, 4000:].any() and waveform[1, 0, 4000:].any()
    shares = fast_cluster.job(entry)["shares"]
    assert {s["participant"] for s in shares if s["index"] > 0} == {"fast"}
    assert any("returns audio only when it runs ComfyUI Distributed GPU" in attempt for s in shares for attempt in s["attempts"])


def test_audio_no_worker_can_render_is_rendered_by_the_master(fast_cluster: Cluster) -> None:
    fast_cluster.use_workers("stock", participate=True, assign_timeout=2)
    entry = fast_cluster.run(tone_prompt(seed=910, samples=3000, extra=50))

    saved = entry["outputs"]["4"]["audio_arrays"][0]
    waveform = np.load(fast_cluster.master.output_dir / saved["filename"])
    assert [read_tone_seed(clip) for clip in waveform] == [910, 911]
    assert waveform.shape == (2, 1, 3050)
    share = {s["index"]: s for s in fast_cluster.job(entry)["shares"]}[1]
    assert share["participant"] == "master" and share["state"] == "done"


class TamperingRelay(BackgroundServer):
    """Relays TCP to a worker; in the first answer to a results GET it flips one byte, or cuts the connection there.

    Byte-level, so the websocket and every other request pass untouched.
    """

    def __init__(self, upstream_port: int, mode: str, offset: int = 1 << 16) -> None:
        super().__init__()
        self.upstream_port = upstream_port
        self.mode = mode
        self.offset = offset
        self.tampered = threading.Event()

    @asynccontextmanager
    async def serving(self) -> AsyncIterator[int]:
        server = await asyncio.start_server(self._connection, "127.0.0.1", 0)
        async with server:
            yield server.sockets[0].getsockname()[1]

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        armed: list[int] = []  # answer bytes relayed since this connection sent the results GET to tamper with

        async def to_worker() -> None:
            while data := await reader.read(1 << 16):
                if RESULTS_REQUEST in data and not self.tampered.is_set() and not armed:
                    armed.append(0)
                upstream_writer.write(data)
                await upstream_writer.drain()

        async def to_master() -> None:
            while data := await upstream_reader.read(1 << 16):
                if armed and not self.tampered.is_set() and armed[0] + len(data) > self.offset:
                    self.tampered.set()
                    at = self.offset - armed[0]
                    if self.mode == "cut":
                        writer.write(data[:at])
                        await writer.drain()
                        return
                    data = data[:at] + bytes([data[at] ^ 0x01]) + data[at + 1 :]
                elif armed:
                    armed[0] += len(data)
                writer.write(data)
                await writer.drain()

        tasks = [asyncio.ensure_future(to_worker()), asyncio.ensure_future(to_master())]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            for stream in (writer, upstream_writer):
                stream.close()


@pytest.fixture
def relay(request: pytest.FixtureRequest, fast_cluster: Cluster) -> Iterator[TamperingRelay]:
    started = TamperingRelay(fast_cluster.workers["fast"].port, request.param).start()
    try:
        yield started
    finally:
        started.stop()


def run_through_relay(fast_cluster: Cluster, relay: TamperingRelay, seed: int) -> tuple[dict, list[str]]:
    fast_cluster.registry([fast_cluster.entry("fast", port=relay.port), fast_cluster.entry("stock")], participate=False)
    fast_cluster.wait_online("fast", "stock")
    entry = fast_cluster.run(noise_prompt(seed=seed, size=256, batch_size=2, prefix=f"relay-{relay.mode}"))
    return entry, [line for s in fast_cluster.job(entry)["shares"] for line in s["attempts"]]


@pytest.mark.parametrize("relay", ["flip"], indirect=True)
def test_corrupted_result_fails_its_checksum_and_the_share_runs_elsewhere(fast_cluster: Cluster, relay: TamperingRelay) -> None:
    entry, attempts = run_through_relay(fast_cluster, relay, seed=700)

    assert entry["status"]["status_str"] == "success", error_message(entry)
    assert relay.tampered.is_set()
    assert len(saved_images(entry, fast_cluster.master.output_dir)) == 4
    assert len(attempts) == 1 and "Worker fast" in attempts[0] and "checksum" in attempts[0]


@pytest.mark.parametrize("relay", ["cut"], indirect=True)
def test_result_cut_short_is_detected_and_the_share_runs_elsewhere(fast_cluster: Cluster, relay: TamperingRelay) -> None:
    entry, attempts = run_through_relay(fast_cluster, relay, seed=710)

    assert entry["status"]["status_str"] == "success", error_message(entry)
    assert relay.tampered.is_set()
    assert len(saved_images(entry, fast_cluster.master.output_dir)) == 4
    assert len(attempts) == 1 and "Worker fast" in attempts[0] and "truncated" in attempts[0]


def test_sink_is_listed_only_by_instances_with_the_extension(fast_cluster: Cluster) -> None:
    assert SINK_CLASS in fast_cluster.workers["fast"].get(f"/object_info/{SINK_CLASS}")[1]
    assert fast_cluster.workers["stock"].get(f"/object_info/{SINK_CLASS}")[1] == {}
