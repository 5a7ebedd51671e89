"""Which model file names may be written, and where: nothing outside the model folders."""

from __future__ import annotations

from pathlib import Path

import pytest

from distributed.errors import ModelPathRefused
from distributed.transport.provision.paths import ModelFolder, clean_name, target_path
from tests.unit.model_folders import PT_EXTENSIONS, model_folders


@pytest.mark.parametrize("name", [
    "../evil.safetensors", "sdxl/../../evil.safetensors", "/etc/evil.safetensors", "C:\\evil.safetensors", "\\\\host\\share\\x.safetensors",
    ".hidden.safetensors", "sdxl/.git/x.safetensors", "a\x00b.safetensors", "a\nb.safetensors", "", "sdxl//x.safetensors",
    "./x.safetensors", " padded.safetensors",
])
def test_names_that_could_leave_the_folder_or_hide_are_refused(name: str) -> None:
    with pytest.raises(ModelPathRefused) as refused:
        clean_name(name)
    assert refused.value.field == "name"


def test_windows_subfolders_become_posix_names() -> None:
    assert clean_name("sdxl\\base.safetensors") == "sdxl/base.safetensors"


def test_code_folders_and_unknown_kinds_are_not_writable(tmp_path: Path) -> None:
    folders = model_folders(tmp_path)
    for kind in ("custom_nodes", "no_such_kind"):
        with pytest.raises(ModelPathRefused) as refused:
            folders.writable(kind)
        assert refused.value.field == "folder"
    assert folders.writable("loras").kind == "loras"


def test_a_file_of_another_type_than_the_kind_lists_is_refused(tmp_path: Path) -> None:
    folder = model_folders(tmp_path).writable("checkpoints")

    with pytest.raises(ModelPathRefused, match="not a checkpoints file"):
        target_path(folder, "evil.py")


def test_a_subfolder_that_is_a_symlink_out_of_the_models_is_refused(tmp_path: Path) -> None:
    folder = model_folders(tmp_path).writable("checkpoints")
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (folder.paths[0] / "out").symlink_to(outside, target_is_directory=True)

    with pytest.raises(ModelPathRefused, match="symlink"):
        target_path(folder, "out/x.safetensors")


def test_a_file_that_is_a_symlink_is_never_written_through(tmp_path: Path) -> None:
    folder = model_folders(tmp_path).writable("checkpoints")
    (folder.paths[0] / "link.safetensors").symlink_to(tmp_path / "victim.safetensors")

    with pytest.raises(ModelPathRefused, match="symlink"):
        target_path(folder, "link.safetensors")


def test_a_model_folder_that_is_itself_a_symlink_is_fine(tmp_path: Path) -> None:
    disk = tmp_path / "big-disk" / "checkpoints"
    disk.mkdir(parents=True)
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "checkpoints").symlink_to(disk, target_is_directory=True)
    folder = ModelFolder("checkpoints", (tmp_path / "models" / "checkpoints",), PT_EXTENSIONS)

    assert target_path(folder, "sdxl/base.safetensors") == tmp_path / "models" / "checkpoints" / "sdxl" / "base.safetensors"
