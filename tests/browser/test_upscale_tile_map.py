"""The tile map of a Distributed Upscale in the panel's run box, on a master and one stock worker.

The upscale runs for real with the tests' tiny SD checkpoint: 16 tiles of 64x64 px, the first shares
one tile each (nothing is measured yet), handed out to the master and the worker. The map must show
the tiles waiting first, then filling in, and end with every tile done. Every test runs against the
pinned frontend and the newest (tests/browser/conftest.py).
"""

from __future__ import annotations

import itertools
import json
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.tiny_sd import write_tiny_checkpoint
from tests.harness import ComfyInstance, running, wait_until
from tests.integration.test_upscale import upscale_prompt

playwright_api = pytest.importorskip("playwright.sync_api")
expect = playwright_api.expect
Page = playwright_api.Page

from tests.browser.ui import UI_TIMEOUT_MS, Frontend, open_distributed_tab, opened_page  # noqa: E402

WORKER = "Desktop"
TILES = 16
PARTLY_DONE = 4
"""Tiles done when the screenshot is taken: the first shares hold one tile each, so the count rises one by one."""
SHOT_NAME = "panel-upscale-tiles"
SHOTS_COPY_DIR = Path("/tmp/panel-shots")
SHOT_SIZE = {"width": 420, "height": 560}
RUN_TIMEOUT_S = 300
SEEDS = itertools.count(7000, 10)
"""A new seed for each run: the worker outlives a frontend's master, and ComfyUI would serve a repeat from its cache."""

expect.set_options(timeout=UI_TIMEOUT_MS)


@pytest.fixture(scope="module")
def worker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ComfyInstance]:
    """A stock ComfyUI with the tiny checkpoint; shared by both frontends' masters."""
    base = tmp_path_factory.mktemp("tile-map-worker")
    instance = ComfyInstance("worker-tiles", base)
    write_tiny_checkpoint(base / "models")
    with running(instance):
        yield instance


@pytest.fixture(scope="module")
def master(tmp_path_factory: pytest.TempPathFactory, worker: ComfyInstance, frontend: Frontend) -> Iterator[ComfyInstance]:
    """A master that renders tiles itself, with the worker in its registry."""
    base_dir = tmp_path_factory.mktemp(f"tile-map-master-{frontend.name}")
    workers_file = base_dir / "workers.json"
    workers_file.write_text(json.dumps({
        "version": 1,
        "master": {"participate": True},
        "settings": {"health_interval": 0.5},
        "workers": [{"id": WORKER.lower(), "name": WORKER, "type": "remote", "host": "127.0.0.1", "port": worker.port}],
    }, indent=2))
    write_tiny_checkpoint(base_dir / "models")
    instance = ComfyInstance(
        "master", base_dir, with_extension=True, env={"DISTRIBUTED_WORKERS_FILE": str(workers_file)},
        extra_args=frontend.master_args(),
    )
    with running(instance):
        yield instance


@pytest.fixture
def page(browser: Any, master: ComfyInstance) -> Iterator[Page]:
    with opened_page(browser, master.url, 1100, 860) as opened:
        yield opened


def worker_online(master: ComfyInstance) -> bool:
    status, body = master.get("/distributed/workers")
    return status == 200 and len(body["workers"]) == 1 and body["workers"][0]["status"]["state"] == "online"


def tiles_done(tile_map: Any) -> int:
    """How many tiles the map's accessible name says are done ("Tile map: 5 of 16 tiles done")."""
    found = re.fullmatch(rf"Tile map: (\d+) of {TILES} tiles done", tile_map.get_attribute("aria-label") or "")
    return int(found.group(1)) if found else -1


def tiles_in(tile_map: Any, state: str) -> int:
    return tile_map.locator(f'[data-state="{state}"]').count()


def test_the_tile_map_shows_pending_tiles_then_fills_in_until_every_tile_is_done(
    page: Page, master: ComfyInstance, frontend: Frontend, tmp_path_factory: pytest.TempPathFactory,
) -> None:
    wait_until(lambda: worker_online(master), 60, message="the worker to be online")
    panel = open_distributed_tab(page)
    checkpoint = write_tiny_checkpoint(master.base_dir / "models")
    prompt_id = master.queue_prompt(upscale_prompt(checkpoint, seed=next(SEEDS), width=128, height=128, prefix="tile-map"))
    run = panel.get_by_role("region", name="Distributed run")
    tile_map = run.get_by_role("img", name=re.compile(r"^Tile map: "))
    expect(tile_map).to_be_visible(timeout=RUN_TIMEOUT_S * 1000)

    wait_until(lambda: tiles_in(tile_map, "pending") > 0 and tiles_done(tile_map) < TILES, RUN_TIMEOUT_S, interval=0.05,
               message="tiles shown as pending while the upscale runs")
    assert tile_map.locator(".dgpu-tile").count() == TILES
    wait_until(lambda: PARTLY_DONE <= tiles_done(tile_map) < TILES, RUN_TIMEOUT_S, interval=0.05,
               message="the map partly filled in: some tiles done, some not")
    shot = save_screenshot(page, frontend, tmp_path_factory)

    expect(tile_map).to_have_attribute("aria-label", f"Tile map: {TILES} of {TILES} tiles done", timeout=RUN_TIMEOUT_S * 1000)
    assert tiles_in(tile_map, "done") == TILES
    legend = run.get_by_role("list", name="Tile colours")
    expect(legend.get_by_role("listitem").filter(has_text=WORKER)).to_be_visible()  # the worker rendered some
    expect(run).to_contain_text("Finished", timeout=RUN_TIMEOUT_S * 1000)
    assert master.wait_history(prompt_id, RUN_TIMEOUT_S)["status"]["status_str"] == "success"
    assert shot.stat().st_size > 0


def save_screenshot(page: Page, frontend: Frontend, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The panel mid-upscale, for docs/upscale.md: into the run's output/panel-shots/ and /tmp/panel-shots/."""
    out_dir = tmp_path_factory.getbasetemp() / "output" / "panel-shots"
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / (f"{SHOT_NAME}.png" if frontend.is_pinned else f"{SHOT_NAME}-{frontend.name}.png")
    page.screenshot(path=str(path), clip={"x": 0, "y": 0, **SHOT_SIZE})
    SHOTS_COPY_DIR.mkdir(parents=True, exist_ok=True)
    shutil.copy(path, SHOTS_COPY_DIR / path.name)
    return path


def test_with_several_frames_the_map_shows_the_first_unfinished_frame_and_ends_on_the_last(page: Page, master: ComfyInstance) -> None:
    wait_until(lambda: worker_online(master), 60, message="the worker to be online")
    panel = open_distributed_tab(page)
    checkpoint = write_tiny_checkpoint(master.base_dir / "models")
    # Three frames of 96x96, four 64 px tiles each (tests/integration/test_upscale.py's clip).
    prompt_id = master.queue_prompt(upscale_prompt(checkpoint, seed=next(SEEDS), batch_size=3, upscale_by=1.5, prefix="tile-map-frames"))
    run = panel.get_by_role("region", name="Distributed run")
    tile_map = run.get_by_role("img", name=re.compile(r"^Tile map, frame "))
    expect(tile_map).to_be_visible(timeout=RUN_TIMEOUT_S * 1000)

    expect(run.get_by_text(re.compile(r"^Frame [12] of 3$"))).to_be_visible()  # not the last frame while the first ones render
    expect(tile_map).to_have_attribute("aria-label", "Tile map, frame 3 of 3: 12 of 12 tiles done", timeout=RUN_TIMEOUT_S * 1000)
    expect(run.get_by_text("Frame 3 of 3", exact=True)).to_be_visible()
    assert tile_map.locator(".dgpu-tile").count() == 4  # one frame's tiles
    assert master.wait_history(prompt_id, RUN_TIMEOUT_S)["status"]["status_str"] == "success"
