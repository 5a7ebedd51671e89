"""The panel's "This workflow on each worker" table, a model copy with its progress, and a set-up
script, in a real Chromium against a real master and a worker that runs this extension.

The workflow is loaded into ComfyUI's editor the way a user's file would be (`loadGraphData`); the
panel reads it back from the editor, as it does for the user.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import OUTPUT_ROOT
from tests.harness import ComfyInstance, reset_dir, running, wait_until
from tests.unit.model_folders import sha256_file, write_random

playwright_api = pytest.importorskip("playwright.sync_api")
from tests.browser.ui import UI_TIMEOUT_MS, opened_page  # noqa: E402

expect = playwright_api.expect
Page = playwright_api.Page

CHROMIUM = Path("/usr/bin/chromium")
TAB_BUTTON = ".distributed-tab-button"
MODEL = "panel-copy.safetensors"
MODEL_SIZE = 300 << 20

expect.set_options(timeout=UI_TIMEOUT_MS)
pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium (apt-get install -y chromium)")


@pytest.fixture(scope="module")
def fleet() -> Iterator[dict[str, ComfyInstance]]:
    base = reset_dir(OUTPUT_ROOT / "inventory-panel")
    workers_file = base / "workers.json"
    master = ComfyInstance("master", base / "master", with_extension=True, env={"DISTRIBUTED_WORKERS_FILE": str(workers_file)})
    worker = ComfyInstance("worker-ext", base / "worker", with_extension=True, env={"DISTRIBUTED_WORKER_ID": "pod"})
    for instance in (master, worker):
        instance.prepare()
        (instance.base_dir / "models" / "checkpoints").mkdir(parents=True, exist_ok=True)
    write_random(master.base_dir / "models" / "checkpoints" / MODEL, MODEL_SIZE, seed=11)
    workers_file.write_text(json.dumps({"version": 1, "workers": [
        {"id": "pod", "name": "Rented pod", "type": "remote", "host": "127.0.0.1", "port": worker.port}]}))
    try:
        with running(master, worker):
            yield {"master": master, "worker": worker}
    finally:  # the logs stay; hundreds of MB of random model files need not
        for models in base.glob("*/models"):
            shutil.rmtree(models, ignore_errors=True)


@pytest.fixture
def page(browser: Any, fleet: dict[str, ComfyInstance]) -> Iterator[Page]:
    """A page of the session's browser (tests/browser/conftest.py): one sync playwright per process."""
    with opened_page(browser, fleet["master"].url) as opened:
        yield opened


def editor_workflow(checkpoint: str) -> dict[str, Any]:
    """A saved workflow with one checkpoint loader, as ComfyUI's editor writes it."""
    return {
        "last_node_id": 1, "last_link_id": 0, "version": 0.4, "links": [], "groups": [], "config": {}, "extra": {},
        "nodes": [{"id": 1, "type": "CheckpointLoaderSimple", "pos": [100, 100], "size": [315, 98], "flags": {}, "order": 0,
                   "mode": 0, "inputs": [], "outputs": [{"name": "MODEL", "type": "MODEL", "links": None},
                                                        {"name": "CLIP", "type": "CLIP", "links": None},
                                                        {"name": "VAE", "type": "VAE", "links": None}],
                   "properties": {"Node name for S&R": "CheckpointLoaderSimple"}, "widgets_values": [checkpoint]}],
    }


def open_panel_with_workflow(page: Page, workflow: dict[str, Any]) -> Any:
    # The tab exists once extensions are set up, which ComfyUI does after it registered the node classes.
    expect(page.locator(TAB_BUTTON)).to_be_visible(timeout=60_000)
    page.evaluate("(workflow) => window.comfyAPI.app.app.loadGraphData(workflow)", workflow)
    page.locator(TAB_BUTTON).click()
    panel = page.locator(".dgpu-panel")
    expect(panel.get_by_role("region", name="This workflow on each worker")).to_be_visible()
    return panel.get_by_role("region", name="This workflow on each worker")


def test_the_table_shows_what_a_worker_lacks_and_a_copy_progresses_to_done(page: Page, fleet: dict[str, ComfyInstance]) -> None:
    section = open_panel_with_workflow(page, editor_workflow(MODEL))
    section.get_by_role("button", name="Check the open workflow").click()
    row = section.get_by_role("row", name="Rented pod")
    expect(row).to_contain_text(MODEL)
    expect(row).to_contain_text("checkpoints, 300 MB")
    # Every text the copy's status line shows, as it shows it: progress is pushed a few times a second.
    page.evaluate("""() => {
        window.__copyTexts = [];
        new MutationObserver(() => {
            for (const el of document.querySelectorAll('.dgpu-copy-row [role=status]')) window.__copyTexts.push(el.textContent);
        }).observe(document.body, {subtree: true, childList: true, characterData: true});
    }""")

    row.get_by_role("button", name="Copy missing models to Rented pod").click()

    expect(section.get_by_role("progressbar", name="Copy to Rented pod")).to_be_visible()
    expect(section.locator(".dgpu-copy-row [role=status]")).to_contain_text("Copied 1 file (300 MB)", timeout=120_000)
    expect(section.get_by_role("row", name="Rented pod")).to_contain_text("none")  # checked again after the copy
    texts = page.evaluate("() => window.__copyTexts")
    assert any("/s · " in text and "left" in text for text in texts), texts
    assert sha256_file(fleet["worker"].base_dir / "models" / "checkpoints" / MODEL) == \
        sha256_file(fleet["master"].base_dir / "models" / "checkpoints" / MODEL)
    shots = OUTPUT_ROOT / "inventory-panel"
    page.locator(".dgpu-panel").screenshot(path=str(shots / "inventory.png"))


def test_the_set_up_script_is_shown_as_text_and_names_what_is_unresolved(page: Page, fleet: dict[str, ComfyInstance]) -> None:
    section = open_panel_with_workflow(page, editor_workflow("not-anywhere.safetensors"))
    wait_until(lambda: fleet["master"].get("/distributed/workers")[1]["workers"][0]["status"]["state"] == "online", 30,
               message="the worker to be online")
    section.get_by_role("button", name="Check the open workflow").click()
    section.get_by_role("row", name="Rented pod").get_by_role("button", name="Set-up script for Rented pod").click()

    script = section.get_by_label("setup-worker.sh for Rented pod")
    expect(script).to_contain_text("#!/usr/bin/env bash")
    expect(script).to_contain_text("model not-anywhere.safetensors")
    expect(section.get_by_role("button", name="Download setup-worker.sh")).to_be_visible()
    assert shutil.which("bash")  # the script itself runs in tests/integration/test_setup_script.py
