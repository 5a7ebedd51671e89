"""Remote and cloud workers over awkward networks: TLS, auth proxies, dropped websockets, uploads, preflight.

Every worker here is a real ComfyUI of the session cluster; what makes it "remote" is a small aiohttp
reverse proxy written below (TLS with a throwaway CA, a bearer-token check, a websocket it cuts
mid-run, counters per route), all on loopback. The slow-link test puts a worker in its own network
namespace behind a shaped veth link.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import ssl
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from distributed.config.models import WorkerConfig
from distributed.config.registry import Registry
from distributed.shares import ShareWork
from distributed.transport.runner import ShareRunner
from distributed.workers.orphans import ShareOwner
from distributed.workers.pool import ClientPool
from tests.conftest import OUTPUT_ROOT, Cluster, mutate_headers
from tests.harness import ComfyInstance, reset_dir, wait_until
from tests.integration.workflows import error_message, noise_prompt, read_stamp, saved_images, seed_stamp_prompt
from tests.netns import LinkUnavailable, NamespacedWorker, capped_link
from tests.proxy import WorkerProxy

TOKEN = "test-token-0123456789"
@pytest.fixture
def proxies() -> Iterator[list[WorkerProxy]]:
    """Proxies a test starts; all stopped afterwards."""
    started: list[WorkerProxy] = []
    yield started
    for proxy in started:
        proxy.stop()


def proxy_for(proxies: list[WorkerProxy], worker: ComfyInstance, **options: Any) -> WorkerProxy:
    proxy = WorkerProxy(worker.url, **options).start()
    proxies.append(proxy)
    return proxy


@dataclass(frozen=True)
class Certificates:
    ca: Path
    cert: Path
    key: Path

    def server_context(self) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.cert, self.key)
        return context


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    """A throwaway CA and a certificate it signed for 127.0.0.1, made with the openssl CLI."""
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is needed to make a test certificate and is not installed")
    folder = tmp_path_factory.mktemp("tls")
    (folder / "server.ext").write_text(
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n"
        "keyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n"
    )
    commands = [
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
         "-subj", "/CN=Distributed Test CA", "-addext", "basicConstraints=critical,CA:TRUE",
         "-addext", "keyUsage=critical,keyCertSign,cRLSign"],
        ["openssl", "req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=127.0.0.1"],
        ["openssl", "x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
         "-out", "server.pem", "-days", "2", "-extfile", "server.ext"],
    ]
    for command in commands:
        subprocess.run(command, cwd=folder, check=True, capture_output=True, timeout=60)
    return Certificates(folder / "ca.pem", folder / "server.pem", folder / "server.key")


def status_of(cluster: Cluster, worker_id: str) -> dict[str, Any]:
    return next(w for w in cluster.master.get("/distributed/workers")[1]["workers"] if w["id"] == worker_id)["status"]


def connection_test(cluster: Cluster, worker_id: str) -> dict[str, Any]:
    status, body = cluster.master.post(f"/distributed/workers/{worker_id}/test", headers=mutate_headers())
    assert status == 200, body
    return body


def cloud_entry(worker_id: str, url: str, **fields: Any) -> dict[str, Any]:
    return {"id": worker_id, "name": f"Cloud {worker_id}", "type": "cloud", "url": url, **fields}


# --- TLS ------------------------------------------------------------------------------------------


def test_tls_worker_with_a_private_certificate_is_refused_without_its_ca(cluster: Cluster, proxies: list[WorkerProxy],
                                                                         certificates: Certificates) -> None:
    proxy = proxy_for(proxies, cluster.workers["a"], ssl_context=certificates.server_context())
    cluster.registry([cloud_entry("tls", proxy.url)])

    wait_until(lambda: status_of(cluster, "tls")["state"] == "error", 20, message="the TLS worker to be in error")
    assert "TLS certificate rejected" in status_of(cluster, "tls")["error"]
    test = connection_test(cluster, "tls")
    assert test["ok"] is False and test["stage"] == "tls" and "tls_ca_file" in test["message"]


def test_tls_worker_renders_a_share_when_given_its_ca_bundle(cluster: Cluster, proxies: list[WorkerProxy],
                                                               certificates: Certificates) -> None:
    proxy = proxy_for(proxies, cluster.workers["a"], ssl_context=certificates.server_context())
    cluster.registry([cloud_entry("tls", proxy.url, tls_ca_file=str(certificates.ca))], participate=False)
    cluster.wait_online("tls")
    entry = cluster.run(seed_stamp_prompt(seed=500))

    assert [read_stamp(p) for p in saved_images(entry, cluster.master.output_dir)] == [(500, 0)]
    assert proxy.requests["POST /prompt"] == 1 and proxy.websockets_opened == 1
    assert connection_test(cluster, "tls")["ok"] is True


# --- auth -----------------------------------------------------------------------------------------


def test_worker_behind_a_token_proxy_is_reported_as_an_auth_error_without_the_token(cluster: Cluster, proxies: list[WorkerProxy]) -> None:
    proxy = proxy_for(proxies, cluster.workers["a"], token=TOKEN)
    cluster.registry([cluster.entry("a", port=proxy.port)])

    wait_until(lambda: status_of(cluster, "a")["state"] == "error", 20, message="the worker to be in error")
    assert "HTTP 401: authentication required or refused" in status_of(cluster, "a")["error"]
    test = connection_test(cluster, "a")
    assert test["ok"] is False and test["stage"] == "auth"


def test_worker_behind_a_token_proxy_renders_with_its_token_on_requests_and_websocket(cluster: Cluster, proxies: list[WorkerProxy]) -> None:
    proxy = proxy_for(proxies, cluster.workers["a"], token=TOKEN)
    cluster.registry([cluster.entry("a", port=proxy.port, auth_token=TOKEN)], participate=False)
    cluster.wait_online("a")
    entry = cluster.run(seed_stamp_prompt(seed=520))

    assert [read_stamp(p) for p in saved_images(entry, cluster.master.output_dir)] == [(520, 0)]
    assert proxy.websockets_opened == 1 and proxy.requests["GET /ws"] == 1


def test_api_shows_the_token_masked(cluster: Cluster) -> None:
    cluster.registry([cluster.entry("a", auth_token=TOKEN, headers={"X-Tunnel-Secret": "tunnel-secret-9876"})])
    listed = next(w for w in cluster.master.get("/distributed/workers")[1]["workers"] if w["id"] == "a")

    assert TOKEN not in str(listed) and "tunnel-secret" not in str(listed)
    assert listed["auth_token"].endswith("6789") and listed["headers"]["X-Tunnel-Secret"].endswith("9876")


# --- websocket drop -------------------------------------------------------------------------------


def test_websocket_dropped_mid_run_still_yields_every_image(cluster: Cluster, proxies: list[WorkerProxy]) -> None:
    proxy = proxy_for(proxies, cluster.workers["a"], cut_websocket_on="progress")
    cluster.registry([cluster.entry("a", port=proxy.port)])
    cluster.wait_online("a")
    entry = cluster.run(seed_stamp_prompt(seed=540, batch_size=2, sleep=2))

    assert proxy.cut.is_set() and proxy.websockets_opened >= 2
    assert [read_stamp(p) for p in saved_images(entry, cluster.master.output_dir)] == [(540, 0), (540, 1), (541, 0), (541, 1)]
    assert [line for s in cluster.job(entry)["shares"] for line in s["attempts"]] == []


# --- input uploads --------------------------------------------------------------------------------


async def test_input_image_is_uploaded_once_across_three_runs(cluster: Cluster, proxies: list[WorkerProxy], tmp_path: Path) -> None:
    proxy = proxy_for(proxies, cluster.workers["b"])
    input_dir = tmp_path / "master-input"
    input_dir.mkdir()
    pixels = np.random.default_rng(7).integers(0, 256, (24, 40, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(input_dir / "distributed-upload-test.png")
    registry = Registry(tmp_path / "workers.json")
    pool = ClientPool()
    runner = ShareRunner(registry, pool, ShareOwner("uploadtest"), input_dir=input_dir)
    worker = WorkerConfig(id="b", name="Worker b", port=proxy.port)
    prompt = {"1": {"class_type": "LoadImage", "inputs": {"image": "distributed-upload-test.png"}},
              "2": {"class_type": "PreviewImage", "inputs": {"images": ["1", 0]}}}
    try:
        results = []
        for run in range(3):
            async with asyncio.timeout(60):
                results.append((await runner.run(ShareWork(prompt, ("2",)), worker, run + 1, lambda _: None)).outputs)
    finally:
        await pool.close()

    assert proxy.requests["POST /upload/image"] == 1 and proxy.requests["POST /prompt"] == 3
    for result in results:  # PreviewImage truncates 255 * (v / 255), so a value may come back one lower
        assert np.abs(np.rint(result["2"][0] * 255).astype(int) - pixels).max() <= 1


# --- model preflight ------------------------------------------------------------------------------


def test_worker_missing_a_model_is_skipped_with_a_message_naming_the_file(cluster: Cluster) -> None:
    checkpoints = cluster.master.base_dir / "models" / "checkpoints"
    checkpoints.mkdir(parents=True, exist_ok=True)
    (checkpoints / "only-on-master.safetensors").write_bytes(b"")  # never loaded: the master only orchestrates
    cluster.use_workers("a", participate=False, assign_timeout=2)
    prompt = {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "only-on-master.safetensors"}},
        "2": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "3": {"class_type": "VAEDecode", "inputs": {"samples": ["2", 0], "vae": ["1", 2]}},
        "4": {"class_type": "DistributedCollector", "inputs": {"images": ["3", 0]}},
        "5": {"class_type": "SaveImage", "inputs": {"images": ["4", 0], "filename_prefix": "preflight"}},
    }
    queued_before = cluster.workers["a"].get("/history")[1]
    entry = cluster.run(prompt)

    assert entry["status"]["status_str"] == "error"
    assert "worker 'Worker a': lacks model file(s): only-on-master.safetensors (CheckpointLoaderSimple.ckpt_name, node 1)" \
        in error_message(entry)
    assert cluster.workers["a"].get("/history")[1].keys() == queued_before.keys()


# --- a worker behind a slow link, in its own network namespace -----------------------------------


@pytest.fixture
def slow_link() -> Iterator[tuple[str, str]]:
    """A namespace for the worker, its link delayed 100 ms and capped at 40 Mbit/s (see tests/netns.py)."""
    try:
        with capped_link(os.getpid() % 200 + 20, "40mbit", delay_ms=100) as link:
            yield link
    except LinkUnavailable as reason:
        pytest.skip(str(reason))


def test_worker_behind_a_slow_link_delivers_large_images(cluster: Cluster, slow_link: tuple[str, str]) -> None:
    namespace, address = slow_link
    worker = NamespacedWorker("worker-netns", reset_dir(OUTPUT_ROOT / "netns-worker"))
    worker.namespace, worker.address = namespace, address
    try:
        worker.start().wait_ready()
        cluster.registry([{"id": "far", "name": "Far worker", "type": "remote", "host": address, "port": worker.port}],
                         participate=False, worker_timeout=30)
        cluster.wait_online("far")
        entry = cluster.run(noise_prompt(seed=11, size=1536, batch_size=2, prefix="far"), timeout=300)
    finally:
        worker.stop()

    assert entry["status"]["status_str"] == "success", error_message(entry)
    assert [Image.open(p).size for p in saved_images(entry, cluster.master.output_dir)] == [(1536, 1536)] * 2
