"""A local worker's explicit `listen` choice: the --listen it is started with, and the lock it gets."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
from pydantic import ValidationError

from distributed.config.models import WorkerConfig
from distributed.errors import ProcessError
from distributed.workers.local.arguments import Argument, ArgumentReader
from distributed.workers.local.command import MasterLayout, WorkerPaths, listen_hosts, with_network_lock, worker_command
from distributed.workers.local.manager import LocalWorkerManager

LAYOUT = MasterLayout(main_py=Path("/comfy/main.py"), base_directory=Path("/comfy"))


def _local(**fields: object) -> WorkerConfig:
    return WorkerConfig(**{"id": "w1", "name": "Worker 1", "type": "local", "port": 8189, **fields})


def _listen_words(worker: WorkerConfig, *arguments: Argument) -> list[str]:
    command = worker_command(worker, arguments, LAYOUT, WorkerPaths(Path("/state/workers/w1")), None, 15, python="/py")
    return [word for word in command if word.startswith("--listen")]


def test_a_worker_listens_on_loopback_unless_network_is_chosen() -> None:
    assert _listen_words(_local()) == ["--listen=127.0.0.1"]
    assert _listen_words(_local(listen="network", auth_token="lock-token-0123456789")) == ["--listen=0.0.0.0"]


def test_a_listen_flag_written_by_hand_wins_over_the_choice() -> None:
    by_hand = Argument("--listen", ("10.0.0.5",))
    worker = _local(listen="network", auth_token="lock-token-0123456789")

    assert _listen_words(worker, by_hand) == ["--listen=10.0.0.5"]
    assert listen_hosts([by_hand], "0.0.0.0") == ["10.0.0.5"]
    assert listen_hosts([], "0.0.0.0") == ["0.0.0.0"]


def test_choosing_the_network_makes_a_lock_token_and_keeps_one_already_there() -> None:
    locked = with_network_lock(_local(listen="network"))

    assert locked.auth_token and len(locked.auth_token) >= 40
    assert with_network_lock(_local(listen="network")).auth_token != locked.auth_token
    assert with_network_lock(locked) == locked
    assert with_network_lock(_local()).auth_token is None


def test_only_a_local_worker_has_a_listen_choice() -> None:
    with pytest.raises(ValidationError, match="listen"):
        WorkerConfig(id="r", name="R", type="remote", port=8188, listen="network")


def test_a_network_worker_without_a_token_is_not_launched(tmp_path: Path, comfy_parser: argparse.ArgumentParser) -> None:
    manager = LocalWorkerManager(LAYOUT, tmp_path / "state", ArgumentReader(comfy_parser))

    with pytest.raises(ProcessError, match="no auth_token to lock it"):
        manager.command(_local(listen="network"))
    assert "--listen=0.0.0.0" in manager.command(_local(listen="network", auth_token="lock-token-0123456789"))
