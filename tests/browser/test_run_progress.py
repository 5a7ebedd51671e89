"""Progress that moves: the panel's run box during a model-free run on the master and two workers.

The prompt has no sampler: a stamped image goes through three one-step test "sleep" nodes, so only
the node count can move the bars (ComfyUI's own weighting: every node counts one). One worker is
four times slower (and backup copies are off), so the other participants finish well before it and
the panel has a finished share to estimate the time left from. The prompt is queued through the API, not from the page:
the master's own share must show its progress whoever queued it. Every test runs against the pinned
frontend and the newest (tests/browser/conftest.py).
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

from tests.harness import ComfyInstance, running, wait_until

playwright_api = pytest.importorskip("playwright.sync_api")
expect = playwright_api.expect
Page = playwright_api.Page

from tests.browser.ui import UI_TIMEOUT_MS, Frontend, open_distributed_tab, opened_page  # noqa: E402

FAST, SLOW = "Desktop", "Laptop"
SLOWDOWN = 4
NODE_SECONDS = 1.5
"""Each sleep node's time on the master and the fast worker; the slow worker takes SLOWDOWN times it."""
SHOT_NAME = "panel-run-progress"
SHOTS_COPY_DIR = Path("/tmp/panel-shots")
SHOT_SIZE = {"width": 420, "height": 480}
RUN_TIMEOUT_S = 180
SEEDS = itertools.count(5000, 10)
"""A new seed for each run: the workers outlive a frontend's master, and ComfyUI would serve a repeat from its cache."""

expect.set_options(timeout=UI_TIMEOUT_MS)


def sampler_free_run(seed: int) -> dict[str, Any]:
    """One share per participant: a stamped image through three one-step sleeps, then the collector."""
    prompt: dict[str, Any] = {
        "1": {"class_type": "DistributedSeed", "inputs": {"seed": seed}},
        "2": {"class_type": "DistTestSeedStamp", "inputs": {"seed": ["1", 0], "width": 16, "height": 16, "batch_size": 1}},
    }
    source = "2"
    for node_id in ("3", "4", "5"):
        prompt[node_id] = {"class_type": "DistTestSleep", "inputs": {"images": [source, 0], "seconds": NODE_SECONDS, "steps": 1}}
        source = node_id
    prompt["6"] = {"class_type": "DistributedCollector", "inputs": {"images": [source, 0]}}
    prompt["7"] = {"class_type": "PreviewImage", "inputs": {"images": ["6", 0]}}
    return prompt


# --- processes ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def workers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, ComfyInstance]]:
    """Two workers with the test nodes, the second SLOWDOWN times slower; shared by both frontends' masters."""
    base = tmp_path_factory.mktemp("progress-workers")
    instances = {
        FAST: ComfyInstance("worker-fast", base / "fast"),
        SLOW: ComfyInstance("worker-slow", base / "slow", env={"DIST_TEST_SLOWDOWN": str(SLOWDOWN)}),
    }
    with running(*instances.values()):
        yield instances


@pytest.fixture(scope="module")
def master(tmp_path_factory: pytest.TempPathFactory, workers: dict[str, ComfyInstance], frontend: Frontend) -> Iterator[ComfyInstance]:
    """A master that renders a share itself, with both workers in its registry."""
    base_dir = tmp_path_factory.mktemp(f"progress-master-{frontend.name}")
    workers_file = base_dir / "workers.json"
    workers_file.write_text(json.dumps({
        "version": 1,
        "master": {"participate": True},
        # No backup copy of the slow worker's share: each row must reach done by its own participant.
        "settings": {"health_interval": 0.5, "backup_tasks": False},
        "workers": [
            {"id": name.lower(), "name": name, "type": "remote", "host": "127.0.0.1", "port": worker.port}
            for name, worker in workers.items()
        ],
    }, indent=2))
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


def workers_online(master: ComfyInstance) -> bool:
    status, body = master.get("/distributed/workers")
    return status == 200 and len(body["workers"]) == 2 and all(w["status"]["state"] == "online" for w in body["workers"])


# --- the run box --------------------------------------------------------------------------------


def overall_percent(run: Any) -> int:
    return int(run.get_by_role("progressbar", name="Overall progress").get_attribute("aria-valuenow") or 0)


def is_running(run: Any) -> bool:
    return run.get_by_text(re.compile(r"^Running on ")).count() == 1


def shares_done(run: Any) -> int:
    return run.get_by_role("listitem").filter(has_text="Done").count()


# --- tests --------------------------------------------------------------------------------------


def test_a_run_without_a_sampler_moves_the_bar_estimates_the_time_left_and_ends_with_every_row_done(
    page: Page, master: ComfyInstance, frontend: Frontend, tmp_path_factory: pytest.TempPathFactory,
) -> None:
    wait_until(lambda: workers_online(master), 60, message="both workers to be online")
    panel = open_distributed_tab(page)
    prompt_id = master.queue_prompt(sampler_free_run(next(SEEDS)))
    run = panel.get_by_role("region", name="Distributed run")
    expect(run).to_be_visible()
    expect(run.get_by_role("listitem")).to_have_count(3)
    expect(run.get_by_text("Running on 3 CPUs", exact=True)).to_be_visible()

    wait_until(lambda: is_running(run) and 0 < overall_percent(run) < 100, RUN_TIMEOUT_S,
               message="the overall bar to move above 0% while the run is on")
    estimate = run.get_by_role("status")
    wait_until(
        lambda: is_running(run) and shares_done(run) >= 1 and re.fullmatch(r"About \S+ left", estimate.inner_text()) is not None,
        RUN_TIMEOUT_S, message="a time-left estimate once a share has finished",
    )
    shot = save_screenshot(page, frontend, tmp_path_factory)

    expect(run).to_contain_text("Finished", timeout=RUN_TIMEOUT_S * 1000)
    expect(run.get_by_role("progressbar", name="Overall progress")).to_have_attribute("aria-valuenow", "100")
    rows = run.get_by_role("listitem")
    for participant in ("Master", FAST, SLOW):
        expect(rows.filter(has_text=participant)).to_contain_text("Done")
    assert master.wait_history(prompt_id)["status"]["status_str"] == "success"
    assert shot.stat().st_size > 0


def save_screenshot(page: Page, frontend: Frontend, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The panel mid-run, for docs/panel.md: into the run's output/panel-shots/ and /tmp/panel-shots/."""
    out_dir = tmp_path_factory.getbasetemp() / "output" / "panel-shots"
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / (f"{SHOT_NAME}.png" if frontend.is_pinned else f"{SHOT_NAME}-{frontend.name}.png")
    page.screenshot(path=str(path), clip={"x": 0, "y": 0, **SHOT_SIZE})
    SHOTS_COPY_DIR.mkdir(parents=True, exist_ok=True)
    shutil.copy(path, SHOTS_COPY_DIR / path.name)
    return path
