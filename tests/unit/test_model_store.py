"""The worker's model routes, served by a real aiohttp app over temporary model folders: chunks,
resume, hash check, free space, no overwrite, nothing outside the model folders."""

from __future__ import annotations

import asyncio
import hashlib
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from distributed.api.access import AccessPolicy
from tests.harness import wait_until_async
from tests.unit.model_folders import files_under, hidden_files, model_app, sha256_file

Client = Callable[[web.Application], Awaitable[TestClient]]
KEY = "0123456789abcdef0123456789abcdef"
MB = 1 << 20


def params(name: str = "base.safetensors", size: int = 0, folder: str = "checkpoints", **more: Any) -> dict[str, str]:
    return {"folder": folder, "name": name, "size": str(size), "key": KEY, **{k: str(v) for k, v in more.items()}}


async def put(client: TestClient, data: bytes, offset: int = 0, **query: Any) -> tuple[int, Any]:
    response = await client.put("/distributed/models/upload", params={**params(**query), "offset": str(offset)}, data=data)
    return response.status, await response.json()


async def finish(client: TestClient, sha256: str, **query: Any) -> tuple[int, Any]:
    response = await client.post("/distributed/models/upload/finish", params={**params(**query), "sha256": sha256})
    return response.status, await response.json()


async def status(client: TestClient, **query: Any) -> tuple[int, Any]:
    response = await client.get("/distributed/models/upload", params=params(**query))
    return response.status, await response.json()


@pytest.fixture
def content() -> bytes:
    return bytes(range(256)) * (12 * MB // 256)


async def test_a_file_sent_in_chunks_lands_whole_and_leaves_no_partial(tmp_path: Path, aiohttp_client: Client, content: bytes) -> None:
    client = await aiohttp_client(model_app(tmp_path)[0])
    half = len(content) // 2

    assert await put(client, content[:half], size=len(content), name="sdxl/base.safetensors") == (200, {"offset": half})
    assert await put(client, content[half:], half, size=len(content), name="sdxl/base.safetensors") == (200, {"offset": len(content)})
    code, body = await finish(client, hashlib.sha256(content).hexdigest(), size=len(content), name="sdxl/base.safetensors")

    target = tmp_path / "models" / "checkpoints" / "sdxl" / "base.safetensors"
    assert code == 200 and body["state"] == "present"
    assert target.read_bytes() == content
    assert hidden_files(tmp_path / "models") == []


async def test_a_broken_off_upload_resumes_at_the_length_received(tmp_path: Path, aiohttp_client: Client, content: bytes) -> None:
    client = await aiohttp_client(model_app(tmp_path)[0])
    await put(client, content[:5 * MB], size=len(content))

    _, where = await status(client, size=len(content))
    await put(client, content[where["offset"]:], where["offset"], size=len(content))
    code, _ = await finish(client, hashlib.sha256(content).hexdigest(), size=len(content))

    assert where["state"] == "partial" and where["offset"] == 5 * MB
    assert code == 200 and sha256_file(tmp_path / "models" / "checkpoints" / "base.safetensors") == hashlib.sha256(content).hexdigest()


async def test_a_chunk_at_the_wrong_offset_is_refused_with_the_offset_to_use(tmp_path: Path, aiohttp_client: Client) -> None:
    client = await aiohttp_client(model_app(tmp_path)[0])
    await put(client, b"x" * 100, size=300)

    code, body = await put(client, b"y" * 100, 200, size=300)

    assert code == 409 and "resume from 100" in body["error"]


async def test_a_file_failing_its_hash_is_deleted_not_kept(tmp_path: Path, aiohttp_client: Client, content: bytes) -> None:
    client = await aiohttp_client(model_app(tmp_path)[0])
    await put(client, content, size=len(content))

    code, body = await finish(client, "0" * 64, size=len(content))

    assert code == 422 and "failed its sha256 check" in body["error"]
    assert not (tmp_path / "models" / "checkpoints" / "base.safetensors").exists()
    assert hidden_files(tmp_path / "models") == []


async def test_a_resumed_file_is_hashed_from_disk_when_the_worker_lost_its_running_hash(
        tmp_path: Path, aiohttp_client: Client, content: bytes) -> None:
    app, store = model_app(tmp_path)
    client = await aiohttp_client(app)
    await put(client, content[:MB], size=len(content))
    store._digests.clear()  # as after a restart of the worker
    await put(client, content[MB:], MB, size=len(content))

    assert (await finish(client, hashlib.sha256(content).hexdigest(), size=len(content)))[0] == 200
    assert (await finish(client, hashlib.sha256(content).hexdigest(), size=len(content)))[0] == 409  # nothing left to finish


async def test_a_different_file_of_the_same_name_is_never_overwritten(tmp_path: Path, aiohttp_client: Client) -> None:
    client = await aiohttp_client(model_app(tmp_path)[0])
    existing = tmp_path / "models" / "checkpoints" / "base.safetensors"
    existing.write_bytes(b"the user's own model")

    code_status, body = await status(client, size=20, sha256=hashlib.sha256(b"another model here!!").hexdigest())
    code_put, _ = await put(client, b"another model here!!", size=20)

    assert code_status == 409 and "never overwritten" in body["error"]
    assert code_put == 409
    assert existing.read_bytes() == b"the user's own model"


async def test_an_identical_file_counts_as_present(tmp_path: Path, aiohttp_client: Client) -> None:
    client = await aiohttp_client(model_app(tmp_path)[0])
    (tmp_path / "models" / "checkpoints" / "base.safetensors").write_bytes(b"model")

    assert (await status(client, size=5))[1] == {"state": "exists", "size": 5}
    assert (await status(client, size=5, sha256=hashlib.sha256(b"model").hexdigest()))[1]["state"] == "present"


async def test_a_file_that_appears_before_the_last_step_is_not_overwritten(tmp_path: Path, aiohttp_client: Client) -> None:
    client = await aiohttp_client(model_app(tmp_path)[0])
    await put(client, b"ours", size=4)
    (tmp_path / "models" / "checkpoints" / "base.safetensors").write_bytes(b"new!")

    code, _ = await finish(client, hashlib.sha256(b"ours").hexdigest(), size=4)

    assert code == 409 and (tmp_path / "models" / "checkpoints" / "base.safetensors").read_bytes() == b"new!"


@pytest.mark.parametrize(("name", "folder"), [
    ("../../../evil.safetensors", "checkpoints"), ("/tmp/evil.safetensors", "checkpoints"), ("evil.py", "checkpoints"),
    ("__init__.py", "custom_nodes"), ("x.safetensors", "../checkpoints"),
])
async def test_traversal_absolute_paths_and_code_folders_are_refused(
        tmp_path: Path, aiohttp_client: Client, name: str, folder: str) -> None:
    root = tmp_path / "root"
    client = await aiohttp_client(model_app(root)[0])

    code, body = await put(client, b"payload", size=7, name=name, folder=folder)

    assert code == 400 and body["field"] in ("name", "folder")
    assert files_under(tmp_path) == []


async def test_a_symlink_out_of_the_model_folder_is_refused(tmp_path: Path, aiohttp_client: Client) -> None:
    root = tmp_path / "root"
    client = await aiohttp_client(model_app(root)[0])
    outside = tmp_path / "outside"
    outside.mkdir()
    (root / "models" / "checkpoints" / "out").symlink_to(outside, target_is_directory=True)

    code, body = await put(client, b"payload", size=7, name="out/evil.safetensors")

    assert code == 400 and "symlink" in body["error"]
    assert list(outside.iterdir()) == []


async def test_no_room_is_refused_before_a_byte_is_written(tmp_path: Path, aiohttp_client: Client) -> None:
    client = await aiohttp_client(model_app(tmp_path, free_space=lambda path: 10 * MB, reserve_bytes=MB)[0])

    code_status, body = await status(client, size=20 * MB)
    code_put, _ = await put(client, b"x" * MB, size=20 * MB)

    assert code_status == 507 and "not enough free space" in body["error"] and "20.0 MB needed" in body["error"]
    assert code_put == 507 and hidden_files(tmp_path / "models") == []


async def test_more_bytes_than_declared_are_refused(tmp_path: Path, aiohttp_client: Client) -> None:
    client = await aiohttp_client(model_app(tmp_path)[0])

    code, body = await put(client, b"x" * 200, size=100)

    assert code == 400 and body["field"] == "size"


async def test_a_second_upload_of_the_same_file_is_refused_while_one_runs(tmp_path: Path, aiohttp_client: Client) -> None:
    client = await aiohttp_client(model_app(tmp_path)[0])
    release = asyncio.Event()
    first_sent = asyncio.Event()

    async def slow_body() -> AsyncIterator[bytes]:
        yield b"a" * MB
        first_sent.set()
        await release.wait()
        yield b"b" * MB

    first = asyncio.ensure_future(client.put("/distributed/models/upload", params={**params(size=2 * MB), "offset": "0"}, data=slow_body()))
    await first_sent.wait()
    await asyncio.sleep(0)
    code, body = await status_after_claim(client)
    release.set()
    response = await first

    assert code == 409 and "being received already" in body["error"]
    assert response.status == 200 and (await response.json())["offset"] == 2 * MB


async def status_after_claim(client: TestClient) -> tuple[int, Any]:
    """A second PUT, retried until the first one holds the file (its body started arriving)."""
    for _ in range(200):
        code, body = await put(client, b"c" * 10, 0, size=2 * MB)
        if code == 409 and "being received" in body["error"]:
            return code, body
        await asyncio.sleep(0.01)
    return code, body


async def test_upload_routes_need_the_token_when_one_is_configured(tmp_path: Path, aiohttp_client: Client) -> None:
    client = await aiohttp_client(model_app(tmp_path, policy=AccessPolicy("worker-token-123456"))[0])

    refused = await client.put("/distributed/models/upload", params={**params(size=4), "offset": "0"}, data=b"data")
    accepted = await client.put("/distributed/models/upload", params={**params(size=4), "offset": "0"}, data=b"data",
                                headers={"Authorization": "Bearer worker-token-123456"})

    assert refused.status == 401 and accepted.status == 200


async def test_upload_routes_refuse_another_web_origin(tmp_path: Path, aiohttp_client: Client) -> None:
    client = await aiohttp_client(model_app(tmp_path)[0])

    response = await client.put("/distributed/models/upload", params={**params(size=4), "offset": "0"}, data=b"data",
                                headers={"Origin": "http://evil.example", "X-Distributed-Request": "1"})

    assert response.status == 403 and hidden_files(tmp_path / "models") == []


async def test_the_listing_names_folder_size_and_sha256_when_asked(tmp_path: Path, aiohttp_client: Client) -> None:
    client = await aiohttp_client(model_app(tmp_path)[0])
    (tmp_path / "models" / "loras" / "style.safetensors").write_bytes(b"lora")
    (tmp_path / "models" / "clip" / "t5.safetensors").parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / "models" / "clip" / "t5.safetensors").write_bytes(b"t5")
    (tmp_path / "models" / "loras" / ".style.safetensors.0123456789abcdef.part").write_bytes(b"partial")
    (tmp_path / "models" / "loras" / "notes.txt").write_text("not a model")

    plain = await (await client.get("/distributed/models")).json()
    hashed = await (await client.get("/distributed/models", params={"sha256": "1"})).json()

    assert [(f["folder"], f["name"], f["size"]) for f in plain["files"]] == [
        ("loras", "style.safetensors", 4), ("text_encoders", "t5.safetensors", 2)]
    assert "sha256" not in plain["files"][0]
    assert hashed["files"][0]["sha256"] == hashlib.sha256(b"lora").hexdigest()
    assert plain["free_bytes"]["checkpoints"] > 0


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 40 MB tmpfs mounted over the checkpoints folder (root only; skipped elsewhere)."""
    mount_point = tmp_path / "models" / "checkpoints"
    mount_point.mkdir(parents=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=40m", "tmpfs", str(mount_point)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({mounted.stderr.decode().strip()}); the injected free-space test covers the check")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


async def test_a_disk_that_fills_up_during_the_copy_loses_the_partial_not_the_worker(
        small_disk: Path, tmp_path: Path, aiohttp_client: Client) -> None:
    client = await aiohttp_client(model_app(tmp_path)[0])
    partial = small_disk / f".base.safetensors.{KEY}.part"

    async def body() -> AsyncIterator[bytes]:
        yield b"x" * 8 * MB
        await wait_until_async(partial.exists, 10, blocking=True)  # the worker checked the space and began writing
        await asyncio.to_thread((small_disk / "filler.bin").write_bytes, b"\0" * 25 * MB)  # something else takes the room
        for _ in range(22):
            yield b"x" * MB

    response = await client.put("/distributed/models/upload", params={**params(size=30 * MB), "offset": "0"}, data=body())
    answer = await response.json()

    assert response.status == 507 and "the disk filled up" in answer["error"]
    assert files_under(small_disk) == ["filler.bin"]


async def test_a_full_disk_is_refused_up_front(small_disk: Path, tmp_path: Path, aiohttp_client: Client) -> None:
    client = await aiohttp_client(model_app(tmp_path, reserve_bytes=MB)[0])

    code, body = await status(client, size=50 * MB)

    assert code == 507 and "not enough free space" in body["error"]
