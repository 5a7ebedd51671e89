"""workers.json: validation, hand edits, atomic writes, and never overwriting an invalid file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from distributed.config.models import RegistryFile, WorkerConfig
from distributed.config.registry import Registry
from distributed.errors import ConfigError, RegistryConflict, UnknownWorker


def _worker(worker_id: str = "a", **fields) -> dict:
    return {"id": worker_id, "name": worker_id.upper(), "type": "remote", "host": "127.0.0.1", "port": 8189, **fields}


def _write(path: Path, workers: list[dict]) -> None:
    path.write_text(json.dumps({"version": 1, "workers": workers}))


def test_missing_file_is_created_with_defaults(tmp_path: Path) -> None:
    registry = Registry(tmp_path / "workers.json")
    assert json.loads(registry.path.read_text())["workers"] == []
    assert registry.error is None


def test_hand_edit_is_seen_on_the_next_read(tmp_path: Path) -> None:
    path = tmp_path / "workers.json"
    _write(path, [_worker("a")])
    registry = Registry(path)
    _write(path, [_worker("a"), _worker("b", port=8190)])
    assert [w.id for w in registry.snapshot().workers] == ["a", "b"]


def test_invalid_file_is_reported_keeps_last_good_config_and_is_not_overwritten(tmp_path: Path) -> None:
    path = tmp_path / "workers.json"
    _write(path, [_worker("a")])
    registry = Registry(path)
    path.write_text('{"version": 1, "workers": [{"id": "a"}]}')
    registry.refresh()
    assert "workers.0.name" in registry.error
    assert [w.id for w in registry.snapshot().workers] == ["a"]
    with pytest.raises(RegistryConflict):
        registry.update(lambda config: config)
    assert path.read_text() == '{"version": 1, "workers": [{"id": "a"}]}'


def test_unknown_key_is_refused_so_typos_are_not_ignored(tmp_path: Path) -> None:
    path = tmp_path / "workers.json"
    _write(path, [_worker("a", prot=1)])
    assert "workers.0.prot" in Registry(path).error


def test_update_applies_to_the_file_as_edited_by_hand_meanwhile(tmp_path: Path) -> None:
    path = tmp_path / "workers.json"
    _write(path, [_worker("a")])
    registry = Registry(path)
    _write(path, [_worker("a"), _worker("hand", port=9000)])

    def add(config: RegistryFile) -> RegistryFile:
        config.workers.append(WorkerConfig(**_worker("api", port=9001)))
        return config

    registry.update(add)
    assert [w["id"] for w in json.loads(path.read_text())["workers"]] == ["a", "hand", "api"]


def test_update_keeps_a_backup_of_the_previous_file(tmp_path: Path) -> None:
    path = tmp_path / "workers.json"
    _write(path, [_worker("a")])
    before = path.read_text()
    Registry(path).update(lambda config: config.model_copy(update={"workers": []}))
    assert path.with_name("workers.json.bak").read_text() == before


def test_update_producing_an_invalid_config_writes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "workers.json"
    _write(path, [_worker("a")])
    before = path.read_text()
    registry = Registry(path)

    def duplicate(config: RegistryFile) -> RegistryFile:
        config.workers.append(config.workers[0].model_copy())
        return config

    with pytest.raises(ConfigError, match="duplicate worker id"):
        registry.update(duplicate)
    assert path.read_text() == before


def test_unknown_worker_id_raises(tmp_path: Path) -> None:
    with pytest.raises(UnknownWorker):
        Registry(tmp_path / "workers.json").worker("nope")


def test_new_worker_id_is_readable_and_unique(tmp_path: Path) -> None:
    path = tmp_path / "workers.json"
    _write(path, [_worker("gpu-box")])
    assert Registry(path).new_worker_id("GPU Box!") == "gpu-box-2"


def test_remote_worker_without_port_names_the_port_field() -> None:
    with pytest.raises(ValueError, match="port"):
        WorkerConfig(id="a", name="A", type="remote")


def test_cloud_worker_url_must_be_http() -> None:
    with pytest.raises(ValueError, match="http"):
        WorkerConfig(id="a", name="A", type="cloud", url="ftp://x")
    assert WorkerConfig(id="a", name="A", type="cloud", url="https://pod.example/").base_url == "https://pod.example"


def test_a_hand_edited_file_hears_of_every_problem_at_once(tmp_path: Path) -> None:
    path = tmp_path / "workers.json"
    path.write_text(json.dumps({"version": 1, "workers": [
        {"id": "a", "name": "A", "type": "remote", "port": 99999},
        {"id": "a", "name": "A again", "type": "remote", "port": 8190},
    ]}))

    registry = Registry(path)

    assert registry.error is not None
    assert "workers.0.port" in registry.error and "duplicate worker id 'a'" in registry.error
