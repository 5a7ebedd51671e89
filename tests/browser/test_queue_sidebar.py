"""ComfyUI's own queue sidebar, for a prompt of the distributed queue that a worker renders: running
while the worker renders it (never pending behind the master's own prompt), then done with its real
running time and one image.

Only the pinned frontend (1.32.9) is driven: the newest reads its job list from `/api/jobs`, which
ComfyUI 0.3.75 does not serve, so it lists no prompt at all there, the master's own included. What
that list is made of in a ComfyUI that serves it, `/queue` and `/history`, is checked without a
browser in tests/integration/test_distributed_queue.py.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import pytest

from tests.harness import ComfyInstance, running, wait_until

playwright_api = pytest.importorskip("playwright.sync_api")
expect = playwright_api.expect
Page = playwright_api.Page

from tests.browser.ui import PAGE_LOAD_MS, UI_TIMEOUT_MS, Frontend, opened_page, sidebar_button  # noqa: E402

WORKER_SECONDS = 6.0
"""How long the worker renders the prompt: long enough to see it running, short for the test."""
QUEUE_TAB = "Queue (q)"

expect.set_options(timeout=UI_TIMEOUT_MS)


def whole_prompt(seed: int, seconds: float, prefix: str) -> dict[str, Any]:
    return {
        "1": {"class_type": "DistTestSeedStamp", "inputs": {"seed": seed, "width": 32, "height": 32, "batch_size": 1}},
        "2": {"class_type": "DistTestSleep", "inputs": {"images": ["1", 0], "seconds": seconds, "steps": 4}},
        "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": prefix}},
    }


@pytest.fixture(scope="module")
def worker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ComfyInstance]:
    instance = ComfyInstance("worker", tmp_path_factory.mktemp("queue-worker"))
    with running(instance):
        yield instance


@pytest.fixture(scope="module")
def master(tmp_path_factory: pytest.TempPathFactory, frontend: Frontend, request: pytest.FixtureRequest) -> Iterator[ComfyInstance]:
    """A master that takes part, with the distributed queue on and one worker."""
    if not frontend.is_pinned:
        pytest.skip(f"frontend {frontend.name} lists jobs from /api/jobs, which ComfyUI 0.3.75 does not serve (see the module docstring)")
    worker: ComfyInstance = request.getfixturevalue("worker")
    base_dir = tmp_path_factory.mktemp(f"queue-master-{frontend.name}")
    workers_file = base_dir / "workers.json"
    workers_file.write_text(json.dumps({
        "version": 1, "master": {"participate": True}, "settings": {"health_interval": 0.5, "distributed_queue": True},
        "workers": [{"id": "gpu-1", "name": "GPU 1", "type": "remote", "host": "127.0.0.1", "port": worker.port}],
    }))
    instance = ComfyInstance("master", base_dir, with_extension=True, env={"DISTRIBUTED_WORKERS_FILE": str(workers_file)},
                             extra_args=frontend.master_args())
    with running(instance):
        wait_until(lambda: instance.get("/distributed/workers")[1]["workers"][0]["status"]["state"] == "online", 60,
                   message="the worker online")
        yield instance


@pytest.fixture
def page(browser: Any, master: ComfyInstance) -> Iterator[Page]:
    with opened_page(browser, master.url, 1400, 900) as opened:
        yield opened


def routed(master: ComfyInstance, prompt_id: str) -> dict[str, Any]:
    status, body = master.get(f"/distributed/queue/{prompt_id}")
    assert status == 200, body
    return body


def test_a_prompt_on_a_worker_shows_running_then_done_with_its_time_and_one_image(page: Page, master: ComfyInstance,
                                                                                 worker: ComfyInstance) -> None:
    sidebar_button(page, QUEUE_TAB).click(timeout=PAGE_LOAD_MS)
    sidebar = page.locator(".sidebar-content-container")
    own = master.queue_prompt(whole_prompt(1, 120, "masters-own"))
    wait_until(lambda: routed(master, own)["participant"] == "master", 30, message="the master rendering its own prompt")
    try:
        on_worker = master.queue_prompt(whole_prompt(2, WORKER_SECONDS, "on-a-worker"))
        wait_until(lambda: routed(master, on_worker)["participant"] == "gpu-1", 30, message="the worker taking the second prompt")

        expect(sidebar.get_by_text("Running", exact=True)).to_have_count(2)
        expect(sidebar.get_by_text("Pending", exact=True)).to_have_count(0)
        assert worker.get("/prompt")[1]["exec_info"]["queue_remaining"] == 1  # it really runs there now

        done = sidebar.locator(".task-item").filter(has=page.get_by_role("img", name=re.compile(r"^on-a-worker_\d{5}_\.png$")))
        expect(done).to_have_count(1, timeout=120_000)
        expect(sidebar.get_by_text("Running", exact=True)).to_have_count(1)  # the master's own prompt runs on
        seconds = float(done.get_by_text(re.compile(r"^\d+\.\d\ds$")).inner_text().rstrip("s"))
        assert seconds >= WORKER_SECONDS
        expect(done.get_by_role("img")).to_have_count(1)
        expect(done.get_by_role("button")).to_have_count(0)  # no count of outputs: it has one image
    finally:
        master.post("/interrupt", {"prompt_id": own})
        master.wait_history(own)
