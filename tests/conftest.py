"""Shared fixtures: a real master ComfyUI with this extension and real worker ComfyUIs without it."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.harness import ComfyInstance, comfyui_root, http_json, reset_dir, running, wait_until

OUTPUT_ROOT = Path(
    os.environ.get("DISTRIBUTED_TEST_OUTPUT") or Path(__file__).resolve().parent.parent / "test-output" / f"run-{os.getpid()}"
)
"""Logs, images and screenshots of this test run; one folder per run, so runs side by side never mix."""


def pytest_configure(config: pytest.Config) -> None:
    OUTPUT_ROOT.mkdir(parents=True, exist_ok=True)


@dataclass
class Cluster:
    """A master and its workers; tests describe the registry they need with `use_workers`."""

    master: ComfyInstance
    workers: dict[str, ComfyInstance]
    workers_file: Path

    def registry(self, workers: list[dict[str, Any]], participate: bool = True, **settings: Any) -> None:
        """Writes workers.json by hand, as a user would, and waits until the master serves it."""
        body = {
            "version": 1,
            "master": {"participate": participate},
            "settings": {"health_interval": 0.5, "worker_timeout": 6, "assign_timeout": 20, **settings},
            "workers": workers,
        }
        self.workers_file.write_text(json.dumps(body, indent=2))
        wanted = [w["id"] for w in workers]
        wait_until(lambda: [w["id"] for w in self.master.get("/distributed/workers")[1]["workers"]] == wanted, 10,
                   message="the master to load workers.json")

    def use_workers(self, *names: str, participate: bool = True, **settings: Any) -> None:
        """The registry holds these running workers, and the master has seen each of them answer: a
        job counts its participants when it starts, so a test that expects N shares waits for that."""
        self.registry([self.entry(name) for name in names], participate=participate, **settings)
        self.wait_online(*names)

    def entry(self, worker: str, **overrides: Any) -> dict[str, Any]:
        return {"id": worker, "name": f"Worker {worker}", "type": "remote", "host": "127.0.0.1",
                "port": self.workers[worker].port, **overrides}

    def wait_online(self, *names: str) -> None:
        def online() -> bool:
            states = {w["id"]: w["status"]["state"] for w in self.master.get("/distributed/workers")[1]["workers"]}
            return all(states.get(name) in ("online", "busy") for name in names)

        wait_until(online, 30, message=f"workers {names} online")

    def run(self, prompt: dict[str, Any], timeout: float = 120) -> dict[str, Any]:
        return self.master.wait_history(self.master.queue_prompt(prompt), timeout)

    def job(self, prompt_entry: dict[str, Any]) -> dict[str, Any]:
        """The distributed job behind a finished prompt (its collector carries the job id)."""
        prompt = prompt_entry["prompt"][2]
        job_id = next(n["inputs"]["distributed_job_id"] for n in prompt.values()
                      if n["class_type"] in ("DistributedCollector", "DistributedAudioCollector"))
        status, body = self.master.get(f"/distributed/jobs/{job_id}")
        assert status == 200, body
        return body


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """Master + workers `a` and `b` (test nodes installed) + `stock` (no test nodes)."""
    base = reset_dir(OUTPUT_ROOT / "cluster")
    workers = {
        "a": ComfyInstance("worker-a", base / "worker-a"),
        "b": ComfyInstance("worker-b", base / "worker-b"),
        "stock": ComfyInstance("worker-stock", base / "worker-stock", with_node_pack=False),
    }
    workers_file = base / "workers.json"
    master = ComfyInstance("master", base / "master", with_extension=True, env={"DISTRIBUTED_WORKERS_FILE": str(workers_file)})
    with running(master, *workers.values()):
        yield Cluster(master, workers, workers_file)


@pytest.fixture
def spare_worker(tmp_path: Path) -> Iterator[ComfyInstance]:
    """A worker of its own, for tests that kill or freeze it."""
    worker = ComfyInstance("worker-spare", reset_dir(OUTPUT_ROOT / f"spare-{time.monotonic_ns()}")).start()
    try:
        yield worker.wait_ready()
    finally:
        worker.stop()


@pytest.fixture(scope="session")
def comfy_parser() -> argparse.ArgumentParser:
    """ComfyUI's own command-line parser, from the install under test (it imports nothing heavy)."""
    root = str(comfyui_root())
    if root not in sys.path:
        sys.path.append(root)  # appended: this project's modules keep their names
    from comfy.cli_args import parser

    return parser


def mutate_headers() -> dict[str, str]:
    return {"X-Distributed-Request": "1"}


__all__ = ["Cluster", "http_json", "mutate_headers"]
