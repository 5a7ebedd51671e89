"""Input uploads: which inputs name input files, and when a file must cross the network again.

The worker side is a recording fake of the one client call the uploader makes; the real upload to a
real ComfyUI is covered in tests/integration/test_remote_workers.py.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, BinaryIO

import pytest

from distributed.config.models import WorkerConfig
from distributed.transport.media import MediaUploader


class RecordingWorker:
    """Stands in for WorkerClient.upload_input: stores nothing, returns ComfyUI-like names."""

    def __init__(self) -> None:
        self.worker = WorkerConfig(id="w", name="W", port=1)
        self.name = self.worker.name
        self.identity = f"{self.worker.id}@{self.worker.base_url}"
        self.uploads: list[tuple[str, str, bytes]] = []

    async def upload_input(self, file: BinaryIO, name: str, subfolder: str, size: int) -> str:
        self.uploads.append((name, subfolder, file.read()))
        return f"{subfolder}/{name}" if subfolder else f"remote-{len(self.uploads)}-{name}"


def info(listed: list[str]) -> dict[str, Any]:
    return {"LoadImage": {"input": {"required": {"image": [listed, {"image_upload": True}]}}},
            "SaveImage": {"input": {"required": {"filename_prefix": ["STRING", {}]}}}}


def load(value: str) -> dict[str, Any]:
    return {"1": {"class_type": "LoadImage", "inputs": {"image": value}},
            "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "x"}}}


@pytest.fixture
def input_dir(tmp_path: Path) -> Path:
    (tmp_path / "cat.png").write_bytes(b"cat")
    return tmp_path


async def test_file_is_uploaded_once_across_runs_and_the_prompt_uses_the_worker_name(input_dir: Path) -> None:
    uploader, worker = MediaUploader(input_dir), RecordingWorker()
    prompts = [await uploader.prepare(load("cat.png"), info([]), 0.0, worker) for _ in range(3)]

    assert worker.uploads == [("cat.png", "", b"cat")]
    assert [p["1"]["inputs"]["image"] for p in prompts] == ["remote-1-cat.png"] * 3


async def test_the_users_prompt_is_not_changed(input_dir: Path) -> None:
    prompt = load("cat.png [input]")
    await MediaUploader(input_dir).prepare(prompt, info([]), 0.0, RecordingWorker())

    assert prompt["1"]["inputs"]["image"] == "cat.png [input]"


async def test_changed_file_is_uploaded_again(input_dir: Path) -> None:
    uploader, worker = MediaUploader(input_dir), RecordingWorker()
    await uploader.prepare(load("cat.png"), info([]), 0.0, worker)
    (input_dir / "cat.png").write_bytes(b"other cat")
    os.utime(input_dir / "cat.png", ns=(1, 1))
    await uploader.prepare(load("cat.png"), info([]), 0.0, worker)

    assert [data for _, _, data in worker.uploads] == [b"cat", b"other cat"]


async def test_file_the_worker_no_longer_lists_is_uploaded_again(input_dir: Path) -> None:
    uploader, worker = MediaUploader(input_dir), RecordingWorker()
    await uploader.prepare(load("cat.png"), info([]), 0.0, worker)
    await uploader.prepare(load("cat.png"), info(["remote-1-cat.png"]), 2e9, worker)
    await uploader.prepare(load("cat.png"), info([]), 2e9, worker)

    assert len(worker.uploads) == 2


async def test_file_in_a_subfolder_keeps_its_subfolder(input_dir: Path) -> None:
    (input_dir / "masks").mkdir()
    (input_dir / "masks" / "m.png").write_bytes(b"m")
    worker = RecordingWorker()
    prompt = await MediaUploader(input_dir).prepare(load("masks/m.png"), info([]), 0.0, worker)

    assert worker.uploads == [("m.png", "masks", b"m")] and prompt["1"]["inputs"]["image"] == "masks/m.png"


@pytest.mark.parametrize("value", ["../outside.png", "cat.png [output]", "missing.png"])
async def test_values_outside_the_input_folder_are_left_alone(input_dir: Path, value: str) -> None:
    (input_dir.parent / "outside.png").write_bytes(b"secret")
    worker = RecordingWorker()
    prompt = await MediaUploader(input_dir).prepare(load(value), info([]), 0.0, worker)

    assert worker.uploads == [] and prompt["1"]["inputs"]["image"] == value
