"""pyproject.toml carries what the Comfy Registry reads ([project], [project.urls], [tool.comfy]).

The same fields `comfy node validate` checks, read with tomllib, so the suite needs no network.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from urllib.parse import urlparse

PROJECT_DIR = Path(__file__).resolve().parents[2]
REPOSITORY = "https://github.com/comfyui-distributed-gpu/comfyui-distributed-gpu"
RAW_MAIN = "https://raw.githubusercontent.com/comfyui-distributed-gpu/comfyui-distributed-gpu/main/"


def pyproject() -> dict:
    return tomllib.loads((PROJECT_DIR / "pyproject.toml").read_text())


def test_the_project_urls_point_at_the_repository() -> None:
    urls = pyproject()["project"]["urls"]
    assert urls["Repository"] == REPOSITORY
    assert urls["Documentation"].startswith(REPOSITORY + "/")
    assert urls["Bug Tracker"] == REPOSITORY + "/issues"


def test_the_registry_entry_names_a_publisher_a_display_name_and_an_icon_in_the_repository() -> None:
    comfy = pyproject()["tool"]["comfy"]
    assert re.fullmatch(r"[a-z0-9][a-z0-9-]*", comfy["PublisherId"])
    assert comfy["DisplayName"] == "ComfyUI Distributed GPU"
    icon = comfy["Icon"]
    assert urlparse(icon).scheme == "https" and icon.startswith(RAW_MAIN)
    icon_file = PROJECT_DIR / icon.removeprefix(RAW_MAIN)
    assert icon_file.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", f"{icon_file} is not a PNG in the repository"


def test_the_package_name_and_version_are_what_the_registry_accepts() -> None:
    project = pyproject()["project"]
    assert re.fullmatch(r"[a-z][a-z0-9-]{2,99}", project["name"])
    assert re.fullmatch(r"\d+\.\d+\.\d+", project["version"])
    assert project["license"]


def test_python_and_aiohttp_floors_match_what_the_code_uses_in_both_files() -> None:
    project = pyproject()["project"]
    assert project["requires-python"] == ">=3.11"
    assert "aiohttp>=3.11.8" in project["dependencies"]
    requirements = (PROJECT_DIR / "requirements.txt").read_text().split()
    assert "aiohttp>=3.11.8" in requirements
    assert sorted(requirements) == sorted(project["dependencies"])
    assert pyproject()["tool"]["ruff"]["target-version"] == "py311"
