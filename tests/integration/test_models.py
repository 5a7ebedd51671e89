"""Which worker has which model, and copying what is missing, between real ComfyUI processes.

A master with this extension, a worker with it (it can receive files) and a stock worker (it can
only be listed). Model files are random bytes with a model's extension: nothing loads them, the
preflight only reads the workers' loader option lists.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import OUTPUT_ROOT
from tests.harness import ComfyInstance, http_json, reset_dir, running, wait_until
from tests.integration.model_workflows import loader_prompt
from tests.unit.model_folders import hidden_files, sha256_file, write_random

MB = 1 << 20
BIG = 200 * MB


@pytest.fixture(scope="module")
def fleet() -> Iterator[dict[str, ComfyInstance]]:
    base = reset_dir(OUTPUT_ROOT / "models")
    workers_file = base / "workers.json"
    instances = {
        "master": ComfyInstance("master", base / "master", with_extension=True, env={"DISTRIBUTED_WORKERS_FILE": str(workers_file)}),
        # Runs this extension as a worker of another master: it serves its model folders, nothing else.
        "ext": ComfyInstance("worker-ext", base / "worker-ext", with_extension=True, env={"DISTRIBUTED_WORKER_ID": "ext"}),
        "stock": ComfyInstance("worker-stock", base / "worker-stock"),
    }
    for instance in instances.values():
        instance.prepare()
        for kind in ("checkpoints", "loras"):
            (instance.base_dir / "models" / kind).mkdir(parents=True, exist_ok=True)
    workers_file.write_text(json.dumps({"version": 1, "workers": [
        {"id": name, "name": f"Worker {name}", "type": "remote", "host": "127.0.0.1", "port": instances[name].port}
        for name in ("ext", "stock")
    ]}))
    try:
        with running(*instances.values()):
            yield instances
    finally:  # the logs stay; hundreds of MB of random model files need not
        for models in base.glob("*/models"):
            shutil.rmtree(models, ignore_errors=True)


def master_model(fleet: dict[str, ComfyInstance], kind: str, name: str, size: int, seed: int = 0) -> str:
    path = fleet["master"].base_dir / "models" / kind / name
    return sha256_file(path) if path.exists() else write_random(path, size, seed)


def needs(fleet: dict[str, ComfyInstance], prompt: dict[str, Any], workflow: dict[str, Any] | None = None) -> dict[str, Any]:
    status, body = fleet["master"].post("/distributed/inventory", {"prompt": prompt, "workflow": workflow})
    assert status == 200, body
    return {row["worker_id"]: row for row in body["workers"]}


def copy_state(fleet: dict[str, ComfyInstance], worker_id: str = "ext") -> dict[str, Any] | None:
    status, body = fleet["master"].get("/distributed/model-copies")
    assert status == 200, body
    return next((c for c in body["copies"] if c["worker_id"] == worker_id), None)


def wait_copy_finished(fleet: dict[str, ComfyInstance], timeout: float = 120) -> dict[str, Any]:
    return wait_until(lambda: (c := copy_state(fleet)) and c["state"] != "copying" and c, timeout, interval=0.2,
                      message="the copy to finish")


def start_copy(fleet: dict[str, ComfyInstance], prompt: dict[str, Any], **extra: Any) -> tuple[int, Any]:
    return http_json("POST", f"{fleet['master'].url}/distributed/workers/ext/models/copy", {"prompt": prompt, **extra})


def test_the_inventory_names_what_each_worker_lacks_and_who_can_receive_it(fleet: dict[str, ComfyInstance]) -> None:
    master_model(fleet, "checkpoints", "base.safetensors", MB, seed=1)
    master_model(fleet, "loras", "style.safetensors", MB, seed=2)
    (fleet["stock"].base_dir / "models" / "loras" / "style.safetensors").write_bytes(b"the stock worker has this one")

    rows = needs(fleet, loader_prompt("base.safetensors", "style.safetensors"))

    assert rows["stock"]["extension"] is False and rows["ext"]["extension"] is True
    assert [(m["name"], m["folder"], m["on_master"]) for m in rows["stock"]["missing_models"]] == [
        ("base.safetensors", "checkpoints", True)]
    assert sorted(m["name"] for m in rows["ext"]["missing_models"]) == ["base.safetensors", "style.safetensors"]
    assert rows["ext"]["missing_nodes"] == [] and rows["stock"]["missing_nodes"] == []  # the collector never reaches a worker
    assert rows["ext"]["copyable_bytes"] == 2 * MB and rows["stock"]["copyable_bytes"] == 0


def test_the_inventory_lists_files_with_sizes_where_the_extension_runs(fleet: dict[str, ComfyInstance]) -> None:
    master_model(fleet, "loras", "style.safetensors", MB, seed=2)
    (fleet["stock"].base_dir / "models" / "loras" / "style.safetensors").write_bytes(b"the stock worker has this one")
    (fleet["ext"].base_dir / "models" / "loras" / "ext-only.safetensors").write_bytes(b"12345")

    status, body = fleet["master"].get("/distributed/inventory")
    rows = {row["worker_id"]: row for row in body["workers"]}

    assert status == 200
    assert {"folder": "loras", "name": "style.safetensors", "size": MB} in [
        {k: m[k] for k in ("folder", "name", "size")} for m in body["master"]["models"]]
    assert {"folder": "loras", "name": "ext-only.safetensors", "size": 5} in [
        {k: m[k] for k in ("folder", "name", "size")} for m in rows["ext"]["models"]]
    stock = {m["name"]: m for m in rows["stock"]["models"]}
    assert stock["style.safetensors"]["size"] is None and "LoraLoader.lora_name" in stock["style.safetensors"]["listed_by"]


def test_a_200_mb_model_is_copied_checked_and_the_preflight_then_passes(fleet: dict[str, ComfyInstance]) -> None:
    digest = master_model(fleet, "checkpoints", "big-200.safetensors", BIG, seed=3)
    prompt = loader_prompt("big-200.safetensors")
    assert [m["name"] for m in needs(fleet, prompt)["ext"]["missing_models"]] == ["big-200.safetensors"]

    status, body = start_copy(fleet, prompt)
    finished = wait_copy_finished(fleet)

    assert status == 202 and body["copy"]["total_bytes"] == BIG
    assert finished["state"] == "done" and finished["files"][0]["state"] == "done", finished
    assert sha256_file(fleet["ext"].base_dir / "models" / "checkpoints" / "big-200.safetensors") == digest
    assert hidden_files(fleet["ext"].base_dir / "models") == []
    assert needs(fleet, prompt)["ext"]["ready"] is True


def test_a_copy_killed_half_way_resumes_where_it_stopped(fleet: dict[str, ComfyInstance]) -> None:
    digest = master_model(fleet, "checkpoints", "resumed.safetensors", BIG, seed=4)
    prompt = loader_prompt("resumed.safetensors")
    # 25 MB/s: the copy takes eight seconds, long enough to kill the worker half way.
    assert start_copy(fleet, prompt, limit_mb_s=25)[0] == 202
    wait_until(lambda: (copy_state(fleet) or {}).get("done_bytes", 0) >= BIG * 0.4, 60, message="the copy to pass 40%")
    fleet["ext"].kill()
    broken = wait_copy_finished(fleet)
    fleet["ext"].start().wait_ready()

    status, _ = start_copy(fleet, prompt)
    finished = wait_copy_finished(fleet)

    assert broken["state"] == "failed" and "Worker ext" in broken["error"] and "resume" in broken["error"]
    assert status == 202
    resumed_from = finished["files"][0]["resumed_from"]
    assert finished["state"] == "done", finished
    assert resumed_from is not None and BIG * 0.2 <= resumed_from <= broken["done_bytes"], (resumed_from, broken["done_bytes"])
    assert sha256_file(fleet["ext"].base_dir / "models" / "checkpoints" / "resumed.safetensors") == digest
    print(f"\nkilled at {broken['done_bytes'] / MB:.1f} MB sent; resumed from {resumed_from / MB:.1f} MB")


def test_a_different_file_of_the_same_name_on_the_worker_is_never_overwritten(fleet: dict[str, ComfyInstance]) -> None:
    master_model(fleet, "checkpoints", "clash.safetensors", MB, seed=5)
    theirs = fleet["ext"].base_dir / "models" / "checkpoints" / "clash.safetensors"
    theirs.write_bytes(b"the worker's own, different model")
    status, body = http_json("POST", f"{fleet['master'].url}/distributed/workers/ext/models/copy",
                             {"files": [{"folder": "checkpoints", "name": "clash.safetensors"}]})
    finished = wait_copy_finished(fleet)

    assert status == 202, body
    assert finished["state"] == "failed" and "never overwritten" in finished["files"][0]["error"]
    assert theirs.read_bytes() == b"the worker's own, different model"


def test_a_stock_worker_is_told_to_use_its_set_up_script(fleet: dict[str, ComfyInstance]) -> None:
    master_model(fleet, "checkpoints", "base.safetensors", MB, seed=1)

    status, body = http_json("POST", f"{fleet['master'].url}/distributed/workers/stock/models/copy",
                             {"prompt": loader_prompt("base.safetensors")})

    assert status == 409 and "does not run this extension" in body["error"] and "set-up script" in body["error"]


def put_chunk(worker: ComfyInstance, data: bytes, **query: str) -> tuple[int, Any]:
    request = urllib.request.Request(f"{worker.url}/distributed/models/upload?{urllib.parse.urlencode(query)}", data=data, method="PUT")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_the_worker_refuses_traversal_and_deletes_a_file_failing_its_hash(fleet: dict[str, ComfyInstance]) -> None:
    worker = fleet["ext"]
    key = "feedfacefeedface"
    escapes = [put_chunk(worker, b"evil", folder="checkpoints", name=name, size="4", key=key, offset="0")
               for name in ("../../../evil.safetensors", "/tmp/evil.safetensors")]
    code_folder, _ = put_chunk(worker, b"evil", folder="custom_nodes", name="evil/__init__.py", size="4", key=key, offset="0")
    assert put_chunk(worker, b"data", folder="loras", name="bad-hash.safetensors", size="4", key=key, offset="0")[0] == 200
    code_hash, body_hash = http_json(
        "POST", f"{worker.url}/distributed/models/upload/finish?folder=loras&name=bad-hash.safetensors&size=4&key={key}&sha256={'0' * 64}")

    assert [code for code, _ in escapes] == [400, 400] and all(body["field"] == "name" for _, body in escapes)
    assert code_folder == 400
    assert not (worker.base_dir / "evil.safetensors").exists() and not (worker.base_dir / "custom_nodes" / "evil").exists()
    assert code_hash == 422 and "deleted" in body_hash["error"]
    assert not (worker.base_dir / "models" / "loras" / "bad-hash.safetensors").exists()
    assert hidden_files(worker.base_dir / "models" / "loras") == []


@pytest.fixture
def small_disk(fleet: dict[str, ComfyInstance]) -> Iterator[Path]:
    """The worker's checkpoints folder on a 50 MB tmpfs (root only)."""
    folder = fleet["ext"].base_dir / "models" / "checkpoints"
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=50m", "tmpfs", str(folder)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({mounted.stderr.decode().strip()}); tests/unit/test_model_store.py covers the check")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


def test_a_copy_to_a_full_disk_is_refused_before_any_byte_is_sent(fleet: dict[str, ComfyInstance], small_disk: Path) -> None:
    master_model(fleet, "checkpoints", "too-big.safetensors", 60 * MB, seed=6)

    status, body = start_copy(fleet, loader_prompt("too-big.safetensors"))

    assert status == 507, body
    assert "Worker ext" in body["error"] and "free for checkpoints" in body["error"] and "60.0 MB" in body["error"]
    assert list(small_disk.iterdir()) == []


def test_token_protected_worker_routes_refuse_a_master_without_the_token() -> None:
    worker = ComfyInstance("worker-token", reset_dir(OUTPUT_ROOT / "models-token"), with_extension=True,
                           env={"DISTRIBUTED_WORKER_ID": "tok", "DISTRIBUTED_API_TOKEN": "worker-secret-token-42"})
    with running(worker):
        refused = put_chunk(worker, b"data", folder="loras", name="x.safetensors", size="4", key="feedfacefeedface", offset="0")
        request = urllib.request.Request(
            f"{worker.url}/distributed/models/upload?folder=loras&name=x.safetensors&size=4&key=feedfacefeedface&offset=0",
            data=b"data", method="PUT", headers={"Authorization": "Bearer worker-secret-token-42"})
        with urllib.request.urlopen(request, timeout=30) as response:
            accepted = response.status

    assert refused[0] == 401 and accepted == 200


def test_another_web_origin_cannot_start_or_stop_a_copy(fleet: dict[str, ComfyInstance]) -> None:
    master_model(fleet, "checkpoints", "base.safetensors", MB, seed=1)
    before = copy_state(fleet)
    headers = {"Origin": "http://evil.example", "X-Distributed-Request": "1"}

    started = http_json("POST", f"{fleet['master'].url}/distributed/workers/ext/models/copy",
                        {"files": [{"folder": "checkpoints", "name": "base.safetensors"}]}, headers=headers)
    stopped = http_json("DELETE", f"{fleet['master'].url}/distributed/workers/ext/models/copy", headers=headers)

    assert started[0] == 403 and stopped[0] == 403
    assert copy_state(fleet) == before
