"""A worker locked with DISTRIBUTED_WORKER_TOKEN: closed to everyone else, open to its master."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import aiohttp
import pytest

from tests.conftest import OUTPUT_ROOT, Cluster
from tests.harness import ComfyInstance, http_json, reset_dir, wait_until
from tests.integration.workflows import read_stamp, saved_images, seed_stamp_prompt

TOKEN = "locked-pod-token-0123456789"


@pytest.fixture(scope="module")
def locked(cluster: Cluster) -> Iterator[ComfyInstance]:
    """A worker with this extension (worker mode, so the fast path) and the test nodes, locked."""
    worker = ComfyInstance(
        "worker-locked", reset_dir(OUTPUT_ROOT / "worker-locked"), with_extension=True, ready_path="/distributed/alive",
        env={"COMFYUI_DISTRIBUTED_WORKER_ID": "locked", "DISTRIBUTED_WORKER_TOKEN": TOKEN},
    ).start()
    try:
        cluster.workers["locked"] = worker.wait_ready()
        yield worker
    finally:
        cluster.workers.pop("locked", None)
        worker.stop()


@pytest.mark.parametrize(("method", "path"), [
    ("GET", "/prompt"), ("POST", "/prompt"), ("GET", "/view?filename=a.png&type=output"), ("POST", "/upload/image"),
    ("GET", "/history"), ("GET", "/queue"), ("GET", "/object_info"), ("GET", "/system_stats"), ("GET", "/"),
    ("GET", "/distributed/results/x/1"),
])
def test_without_the_token_every_route_is_refused(locked: ComfyInstance, method: str, path: str) -> None:
    status, _ = http_json(method, locked.url + path, {} if method == "POST" else None)
    assert status == 401
    assert http_json(method, locked.url + path, {} if method == "POST" else None, headers={"Authorization": "Bearer wrong"})[0] == 401


async def test_without_the_token_the_websocket_is_refused(locked: ComfyInstance) -> None:
    async with aiohttp.ClientSession() as session, asyncio.timeout(30):
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await session.ws_connect(locked.url + "/ws?clientId=outsider")
    assert refused.value.status == 401


def test_its_master_runs_a_distributed_prompt_on_it_over_the_fast_path(cluster: Cluster, locked: ComfyInstance) -> None:
    cluster.registry([cluster.entry("locked", auth_token=TOKEN), cluster.entry("a")])
    cluster.wait_online("locked", "a")

    entry = cluster.run(seed_stamp_prompt(seed=7100, prefix="locked"))

    assert [read_stamp(p) for p in saved_images(entry, cluster.master.output_dir)] == [(7100, 0), (7101, 0), (7102, 0)]
    workers = {w["id"]: w for w in cluster.master.get("/distributed/workers")[1]["workers"]}
    assert workers["locked"]["result_link"] is not None  # its share came back through the results route


def test_a_wrong_token_leaves_the_worker_in_error_naming_authentication(cluster: Cluster, locked: ComfyInstance) -> None:
    cluster.registry([cluster.entry("locked", auth_token="not-the-token-000000")])

    def refused() -> str | None:
        worker = cluster.master.get("/distributed/workers")[1]["workers"][0]
        return worker["status"]["error"] if worker["status"]["state"] == "error" else None

    assert "authentication" in wait_until(refused, 30, message="the worker to be refused")
