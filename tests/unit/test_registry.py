"""workers.json: validation, hand edits, atomic writes, and never overwriting an invalid file."""

from __future__ import annotations

import json
import os
import stat
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


def test_workers_json_and_its_backup_are_readable_by_the_user_only(tmp_path: Path) -> None:
    path = tmp_path / "workers.json"
    _write(path, [_worker("a", auth_token="secret-token-0001")])
    previous = os.umask(0o022)
    try:
        registry = Registry(path)
        registry.update(lambda config: config.model_copy(update={"workers": [WorkerConfig(**_worker("b", auth_token="t-0000000002"))]}))
        registry.update(lambda config: config.model_copy(update={"workers": []}))
    finally:
        os.umask(previous)

    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.with_name("workers.json.bak").stat().st_mode) == 0o600
    assert "t-0000000002" in path.with_name("workers.json.bak").read_text()


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


def test_headers_master_host_and_allowed_hosts_have_sane_limits() -> None:
    too_many = {f"X-H{i}": "v" for i in range(33)}
    for bad in ({"headers": too_many}, {"headers": {"X-Long": "v" * 5000}}, {"headers": {"X-" + "n" * 70: "v"}},
                {"headers": {"X-Key": "a\u00e9b"}}, {"headers": {"X-Key": "a", "x-key": "b"}}):
        with pytest.raises(ValueError):
            WorkerConfig(**_worker("a", **bad))
    for master in ({"host": "h" * 300}, {"host": "evil host"}, {"allowed_hosts": ["bad name"]}, {"allowed_hosts": ["h"] * 33}):
        with pytest.raises(ValueError):
            RegistryFile.model_validate({"version": 1, "master": master})
    assert RegistryFile.model_validate({"version": 1, "master": {"host": "192.168.1.2", "allowed_hosts": ["studio.lan"]}})


def test_credentials_in_a_url_cannot_be_combined_with_a_token() -> None:
    with pytest.raises(ValueError, match="credentials in the url"):
        WorkerConfig(id="a", name="A", type="cloud", url="https://user:pass@gpu.example", auth_token="token-000000001")
