"""A set-up script prepares a stock worker for a workflow, from facts alone.

The master runs this extension and a custom node pack cloned from a git remote (a bare repository
on this machine: there is no internet here); the workflow's model metadata points at a local HTTP
server. The script the master writes for the worker is run, the files are checked, and after a
restart the worker's preflight passes.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import OUTPUT_ROOT
from tests.harness import ComfyInstance, http_json, reset_dir, running
from tests.integration.model_workflows import loader_prompt
from tests.unit.model_folders import sha256_file, write_random
from tests.unit.script_fixtures import HostedPack, file_server, git, hosted_pack

NODE_PACK_DIR = Path(__file__).resolve().parent.parent / "node_pack"
MB = 1 << 20


class Setup:
    def __init__(self, master: ComfyInstance, worker: ComfyInstance, pack: HostedPack, served: Path) -> None:
        self.master, self.worker, self.pack, self.served = master, worker, pack, served


@pytest.fixture(scope="module")
def setup() -> Iterator[Setup]:
    base = reset_dir(OUTPUT_ROOT / "setup-script")
    workers_file = base / "workers.json"
    master = ComfyInstance("master", base / "master", with_extension=True, with_node_pack=False,
                           env={"DISTRIBUTED_WORKERS_FILE": str(workers_file)})
    worker = ComfyInstance("worker-bare", base / "worker", with_node_pack=False)
    master.prepare()
    pack = hosted_pack(base / "remote", NODE_PACK_DIR, "dist_pack")
    git("clone", "-q", str(pack.origin), str(master.base_dir / "custom_nodes" / "dist_pack"))
    workers_file.write_text(json.dumps({"version": 1, "workers": [
        {"id": "pod", "name": "Bare pod", "type": "remote", "host": "127.0.0.1", "port": worker.port}]}))
    with running(master, worker):
        yield Setup(master, worker, pack, base / "served")


def saved_workflow(base_url: str, checkpoint_sha: str) -> dict[str, Any]:
    """The saved workflow's model metadata, in both places ComfyUI's frontend puts it."""
    return {
        "nodes": [{"id": 6, "type": "LoraLoader", "widgets_values": ["style.safetensors", 1.0, 1.0], "properties": {"models": [
            {"name": "style.safetensors", "url": f"{base_url}/loras/style.safetensors", "directory": "loras"}]}}],
        "models": [{"name": "base.safetensors", "url": f"{base_url}/ckpt/base.safetensors", "directory": "checkpoints",
                    "hash": checkpoint_sha, "hash_type": "SHA256"}],
    }


def worker_needs(master: ComfyInstance, prompt: dict[str, Any], workflow: dict[str, Any]) -> dict[str, Any]:
    status, body = master.post("/distributed/inventory", {"prompt": prompt, "workflow": workflow})
    assert status == 200, body
    return body["workers"][0]


def test_the_script_prepares_a_stock_worker_and_its_preflight_then_passes(setup: Setup) -> None:
    checkpoint_sha = write_random(setup.served / "ckpt" / "base.safetensors", 3 * MB, seed=7)
    lora_sha = write_random(setup.served / "loras" / "style.safetensors", MB, seed=8)
    prompt = loader_prompt("base.safetensors", "style.safetensors", test_node=True)
    with file_server(setup.served) as base_url:
        workflow = saved_workflow(base_url, checkpoint_sha)
        before = worker_needs(setup.master, prompt, workflow)
        status, script = http_json("POST", f"{setup.master.url}/distributed/setup-script",
                                   {"prompt": prompt, "workflow": workflow, "worker_id": "pod", "format": "text"})
        assert status == 200, script
        script_path = setup.worker.base_dir / "setup-worker.sh"
        script_path.write_text(script)
        run = subprocess.run(["bash", str(script_path), str(setup.worker.base_dir)], capture_output=True, text=True, timeout=300,
                             env={**os.environ, "SKIP_PIP": "1"})

    assert before["missing_nodes"] == ["DistTestSleep"]
    assert sorted(m["name"] for m in before["missing_models"]) == ["base.safetensors", "style.safetensors"]
    assert f"node_pack dist_pack {setup.pack.origin} {setup.pack.commit}" in script
    assert run.returncode == 0, run.stdout + run.stderr
    assert sha256_file(setup.worker.base_dir / "models" / "checkpoints" / "base.safetensors") == checkpoint_sha
    assert sha256_file(setup.worker.base_dir / "models" / "loras" / "style.safetensors") == lora_sha
    assert git("rev-parse", "HEAD", cwd=setup.worker.base_dir / "custom_nodes" / "dist_pack") == setup.pack.commit

    setup.worker.stop()
    setup.worker.start().wait_ready()  # custom nodes load at start

    after = worker_needs(setup.master, prompt, workflow)
    assert after["ready"] is True, after


def test_what_cannot_be_resolved_is_named_in_comments(setup: Setup) -> None:
    prompt = loader_prompt("nowhere.safetensors")

    status, body = setup.master.post("/distributed/setup-script", {"prompt": prompt, "shell": "powershell"})

    assert status == 200, body
    assert body["filename"] == "setup-worker.ps1"
    assert ("# Not resolved; do these by hand:" in body["script"]
            and "model nowhere.safetensors (CheckpointLoaderSimple.ckpt_name, node 1): the workflow's model metadata gives no URL for it"
            in body["script"])
    assert body["unresolved"] and body["models"] == []
