"""A host in the Distributed panel: its card, its workers grouped under its name, and the actions on
them, driven in a real Chromium against a real master and a real host (a second master with this
extension and an API token). Nothing is launched here: tests/integration/test_hosts.py launches.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.harness import ComfyInstance, free_port, http_json, wait_until

playwright_api = pytest.importorskip("playwright.sync_api")
expect = playwright_api.expect
Page = playwright_api.Page

from tests.browser.ui import Frontend, open_distributed_tab  # noqa: E402

TOKEN = "host-api-token-0123456789abcdef"
WORKER = "w1"
MARKUP_NAME = "<img src=x onerror=alert(1)>"
UI_TIMEOUT_MS = 30_000

expect.set_options(timeout=UI_TIMEOUT_MS)


@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ComfyInstance]:
    base_dir = tmp_path_factory.mktemp("panel-host")
    workers_file = base_dir / "workers.json"
    workers_file.write_text(json.dumps({"version": 1, "workers": [
        {"id": WORKER, "name": MARKUP_NAME, "type": "local", "port": free_port()},
    ]}))
    instance = ComfyInstance("host", base_dir, with_extension=True,
                             env={"DISTRIBUTED_WORKERS_FILE": str(workers_file), "DISTRIBUTED_API_TOKEN": TOKEN})
    try:
        instance.start().wait_ready()
        yield instance
    finally:
        instance.stop()


@pytest.fixture(scope="module")
def master(tmp_path_factory: pytest.TempPathFactory, host: ComfyInstance, frontend: Frontend) -> Iterator[ComfyInstance]:
    base_dir = tmp_path_factory.mktemp(f"panel-hosts-master-{frontend.name}")
    workers_file = base_dir / "workers.json"
    workers_file.write_text(json.dumps({"version": 1, "settings": {"health_interval": 0.5}, "workers": [
        {"id": "box", "name": "Box", "type": "host", "url": host.url, "auth_token": TOKEN},
    ]}))
    instance = ComfyInstance("master", base_dir, with_extension=True, env={"DISTRIBUTED_WORKERS_FILE": str(workers_file)},
                             extra_args=frontend.master_args())
    try:
        instance.start().wait_ready()
        yield instance
    finally:
        instance.stop()


def on_host(host: ComfyInstance, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    return http_json(method, host.url + path, body, headers={"Authorization": f"Bearer {TOKEN}"})


def managed_ids(master: ComfyInstance) -> list[str]:
    return [w["id"] for w in master.get("/distributed/workers")[1]["workers"] if w.get("managed_by")]


@pytest.fixture
def page(browser: Any, master: ComfyInstance, host: ComfyInstance) -> Iterator[Page]:
    """The master's page, with the host back to its one worker, listening on the host only."""
    for worker in on_host(host, "GET", "/distributed/host")[1]["workers"]:
        if worker["id"] != WORKER:
            assert on_host(host, "DELETE", f"/distributed/workers/{worker['id']}")[0] == 200
    assert on_host(host, "PATCH", f"/distributed/workers/{WORKER}", {"listen": "loopback"})[0] == 200
    wait_until(lambda: managed_ids(master) == [], 30, message="the master to drop the host's network workers")
    context = browser.new_context(viewport={"width": 1280, "height": 860})
    opened = context.new_page()
    opened.set_default_timeout(UI_TIMEOUT_MS)
    dialogs: list[str] = []
    opened.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    try:
        opened.goto(master.url)
        yield opened
        assert dialogs == []  # no markup from the host ever ran
    finally:
        context.close()


def host_worker_card(panel: Any, name: str) -> Any:
    return panel.get_by_role("listitem", name=f"Worker {name} on Box", exact=True)


def test_the_host_is_shown_with_its_gpus_and_its_workers_grouped_under_its_name(page: Page) -> None:
    panel = open_distributed_tab(page)
    group = panel.get_by_role("region", name="Host Box", exact=True)
    card = group.get_by_role("article", name="Host Box", exact=True)

    expect(card.locator(".dgpu-status")).to_have_text("Connected")
    expect(card.get_by_role("list", name="GPUs of Box")).to_contain_text("No GPUs")
    worker = host_worker_card(group, MARKUP_NAME)
    expect(worker.get_by_role("heading", name=MARKUP_NAME)).to_be_visible()
    expect(worker.locator(".dgpu-status")).to_have_text("Stopped · listens on the host only, not used here")
    expect(worker.get_by_role("switch", name="Listens on the network")).not_to_be_checked()
    expect(panel.get_by_role("article", name="Worker Box")).to_have_count(0)  # the host is no worker of the list


def test_the_listen_switch_makes_the_hosts_worker_this_masters_and_back(page: Page, master: ComfyInstance) -> None:
    worker = host_worker_card(open_distributed_tab(page), MARKUP_NAME)

    worker.get_by_role("switch", name="Listens on the network").click()

    expect(worker.get_by_role("switch", name="Used by this master")).to_be_checked()
    expect(worker.locator(".dgpu-status")).to_have_text("Stopped")
    assert managed_ids(master) == [f"box.{WORKER}"]

    worker.get_by_role("switch", name="Listens on the network").click()

    expect(worker.get_by_role("switch", name="Used by this master")).to_be_hidden()
    wait_until(lambda: managed_ids(master) == [], 30, message="the managed entry to go")


def test_a_cpu_worker_is_added_on_the_host_and_removed_again(page: Page, host: ComfyInstance) -> None:
    panel = open_distributed_tab(page)

    panel.get_by_role("button", name="Add a CPU worker on Box").click()

    added = host_worker_card(panel, "CPU worker")
    expect(added.locator(".dgpu-status")).to_have_text("Stopped")
    stored = json.loads(Path(host.env["DISTRIBUTED_WORKERS_FILE"]).read_text())["workers"][-1]
    assert (stored["name"], stored["listen"], bool(stored["auth_token"])) == ("CPU worker", "network", True)

    added.get_by_role("button", name="Remove", exact=True).click()
    added.get_by_role("button", name="Remove CPU worker").click()

    expect(added).to_have_count(0)
    assert [w["id"] for w in on_host(host, "GET", "/distributed/host")[1]["workers"]] == [WORKER]


def test_the_log_of_a_hosts_worker_is_read_through_the_host(page: Page) -> None:
    worker = host_worker_card(open_distributed_tab(page), MARKUP_NAME)

    worker.get_by_role("button", name="View log").click()

    log = worker.get_by_role("region", name=f"{MARKUP_NAME} log")
    expect(log).to_contain_text("The log is empty.")
