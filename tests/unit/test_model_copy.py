"""The master's side of a model copy, against the worker's real model routes on a local port."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from distributed.config.models import WorkerConfig
from distributed.transport.provision import remote
from distributed.transport.provision.hashes import HashCache
from distributed.transport.provision.sender import CopyFile, CopyState, FileState, ModelCopier, ModelCopy, version_key
from distributed.workers.pool import ClientPool
from tests.harness import wait_until_async
from tests.unit.model_folders import hidden_files, model_app, sha256_file, write_random

Serve = Callable[[web.Application], Awaitable[TestServer]]
MB = 1 << 20


@pytest.fixture
async def pool() -> AsyncIterator[ClientPool]:
    clients = ClientPool()
    yield clients
    await clients.close()


def worker_at(server: TestServer) -> WorkerConfig:
    return WorkerConfig(id="w1", name="Pod", type="remote", host="127.0.0.1", port=server.port)


def source_file(master: Path, kind: str, name: str, size: int, seed: int = 1) -> CopyFile:
    path = master / "models" / kind / name
    write_random(path, size, seed)
    return CopyFile(kind, name, path, size)


async def copy_and_wait(copier: ModelCopier, worker: WorkerConfig, files: list[CopyFile]) -> ModelCopy:
    copy = copier.start(worker, files)
    await wait_until_async(lambda: copy.state != CopyState.COPYING, 60, message="the copy to end")
    return copy


async def test_missing_files_are_copied_into_the_same_folder_kind(tmp_path: Path, aiohttp_server: Serve, pool: ClientPool) -> None:
    server = await aiohttp_server(model_app(tmp_path / "worker")[0])
    published: list[dict[str, Any]] = []
    copier = ModelCopier(pool, HashCache(), published.append)
    files = [source_file(tmp_path / "master", "checkpoints", "sdxl/base.safetensors", 9 * MB),
             source_file(tmp_path / "master", "loras", "style.safetensors", 3 * MB, seed=2)]

    copy = await copy_and_wait(copier, worker_at(server), files)

    assert copy.state == CopyState.DONE and copy.error is None
    for file in files:
        assert sha256_file(tmp_path / "worker" / "models" / file.kind / file.name) == sha256_file(file.source)
    assert published[-1]["state"] == "done" and published[-1]["done_bytes"] == published[-1]["total_bytes"] == 12 * MB
    assert hidden_files(tmp_path / "worker" / "models") == []


async def test_a_copy_resumes_where_the_worker_stopped_receiving(tmp_path: Path, aiohttp_server: Serve, pool: ClientPool) -> None:
    server = await aiohttp_server(model_app(tmp_path / "worker")[0])
    worker = worker_at(server)
    copier = ModelCopier(pool, HashCache(), lambda snapshot: None)
    file = source_file(tmp_path / "master", "checkpoints", "base.safetensors", 10 * MB)
    # An earlier copy got 4 MB across before it broke off.
    key = version_key(file, file.source.stat().st_mtime_ns)
    params = remote.upload_params("checkpoints", "base.safetensors", file.size, key)

    async def first_part() -> AsyncIterator[bytes]:
        yield file.source.read_bytes()[: 4 * MB]

    assert await remote.send_chunk(pool.client(worker), params, 0, first_part()) == 4 * MB

    copy = await copy_and_wait(copier, worker, [file])

    assert copy.state == CopyState.DONE
    assert copy.files[0].resumed_from == 4 * MB
    assert sha256_file(tmp_path / "worker" / "models" / "checkpoints" / "base.safetensors") == sha256_file(file.source)


async def test_a_refused_file_fails_alone_and_the_others_are_copied(tmp_path: Path, aiohttp_server: Serve, pool: ClientPool) -> None:
    server = await aiohttp_server(model_app(tmp_path / "worker")[0])
    clash = tmp_path / "worker" / "models" / "checkpoints" / "base.safetensors"
    clash.write_bytes(b"someone else's model")
    copier = ModelCopier(pool, HashCache(), lambda snapshot: None)
    files = [source_file(tmp_path / "master", "checkpoints", "base.safetensors", MB),
             source_file(tmp_path / "master", "loras", "style.safetensors", MB, seed=3)]

    copy = await copy_and_wait(copier, worker_at(server), files)

    assert copy.state == CopyState.FAILED
    assert [f.state for f in copy.files] == [FileState.FAILED, FileState.DONE]
    assert "never overwritten" in copy.files[0].error and "1 of 2 files copied" in copy.error
    assert clash.read_bytes() == b"someone else's model"


async def test_an_identical_file_on_the_worker_is_not_sent_again(tmp_path: Path, aiohttp_server: Serve, pool: ClientPool) -> None:
    server = await aiohttp_server(model_app(tmp_path / "worker")[0])
    file = source_file(tmp_path / "master", "loras", "style.safetensors", 2 * MB)
    (tmp_path / "worker" / "models" / "loras" / "style.safetensors").write_bytes(file.source.read_bytes())
    copier = ModelCopier(pool, HashCache(), lambda snapshot: None)

    copy = await copy_and_wait(copier, worker_at(server), [file])

    assert copy.state == CopyState.DONE and copy.files[0].state == FileState.PRESENT


async def test_a_worker_without_room_names_the_file_and_the_space(tmp_path: Path, aiohttp_server: Serve, pool: ClientPool) -> None:
    server = await aiohttp_server(model_app(tmp_path / "worker", free_space=lambda path: MB)[0])
    copier = ModelCopier(pool, HashCache(), lambda snapshot: None)

    copy = await copy_and_wait(copier, worker_at(server), [source_file(tmp_path / "master", "checkpoints", "big.safetensors", 3 * MB)])

    assert copy.state == CopyState.FAILED
    assert "worker 'Pod': not enough free space for big.safetensors" in copy.files[0].error


async def test_a_worker_that_goes_away_fails_the_copy_naming_it(tmp_path: Path, aiohttp_server: Serve, pool: ClientPool) -> None:
    server = await aiohttp_server(model_app(tmp_path / "worker")[0])
    worker = worker_at(server)
    await server.close()
    copier = ModelCopier(pool, HashCache(), lambda snapshot: None)

    copy = await copy_and_wait(copier, worker, [source_file(tmp_path / "master", "checkpoints", "base.safetensors", MB)])

    assert copy.state == CopyState.FAILED and "worker 'Pod'" in copy.error and "resume" in copy.error


async def test_a_second_copy_to_the_same_worker_is_refused_while_one_runs(tmp_path: Path, aiohttp_server: Serve, pool: ClientPool) -> None:
    server = await aiohttp_server(model_app(tmp_path / "worker")[0])
    worker = worker_at(server)
    copier = ModelCopier(pool, HashCache(), lambda snapshot: None)
    file = source_file(tmp_path / "master", "checkpoints", "base.safetensors", 8 * MB)
    copier.start(worker, [file], limit_bytes_per_s=4 * MB)

    with pytest.raises(Exception, match="running already"):
        copier.start(worker, [file])
    cancelled = await copier.cancel(worker.id)

    assert cancelled.state == CopyState.CANCELLED


async def test_a_file_whose_hash_does_not_match_on_the_worker_is_deleted_there(
        tmp_path: Path, aiohttp_server: Serve, pool: ClientPool) -> None:
    server = await aiohttp_server(model_app(tmp_path / "worker")[0])
    file = source_file(tmp_path / "master", "loras", "style.safetensors", 2 * MB)
    hashes = HashCache()
    hashes.remember(file.source, "0" * 64)  # a stale cache entry stands for a file damaged on the way
    copier = ModelCopier(pool, hashes, lambda snapshot: None)

    copy = await copy_and_wait(copier, worker_at(server), [file])

    assert copy.state == CopyState.FAILED and "failed its sha256 check" in copy.files[0].error
    assert not (tmp_path / "worker" / "models" / "loras" / "style.safetensors").exists()
    assert hidden_files(tmp_path / "worker" / "models") == []


async def test_an_empty_model_file_is_copied_too(tmp_path: Path, aiohttp_server: Serve, pool: ClientPool) -> None:
    server = await aiohttp_server(model_app(tmp_path / "worker")[0])
    source = tmp_path / "master" / "models" / "vae" / "empty.safetensors"
    source.parent.mkdir(parents=True)
    source.write_bytes(b"")
    copier = ModelCopier(pool, HashCache(), lambda snapshot: None)

    copy = await copy_and_wait(copier, worker_at(server), [CopyFile("checkpoints", "sub/empty.safetensors", source, 0)])

    assert copy.state == CopyState.DONE, copy.error
    assert (tmp_path / "worker" / "models" / "checkpoints" / "sub" / "empty.safetensors").read_bytes() == b""
