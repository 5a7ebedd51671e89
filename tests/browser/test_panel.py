"""The Distributed sidebar panel, driven in a real Chromium against a real master and worker.

Debian's /usr/bin/chromium is used as is (playwright never downloads a browser here). Everything
is located by role and text, and every wait is on rendered state with a deadline. Every test runs
against the pinned frontend and the newest (the `frontend` fixture, tests/browser/conftest.py).
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.harness import ComfyInstance, free_port, http_json, wait_until

playwright_api = pytest.importorskip("playwright.sync_api")
expect = playwright_api.expect
Page = playwright_api.Page

from tests.browser.ui import Frontend, open_distributed_tab  # noqa: E402

SHOTS_COPY_DIR = Path("/tmp/panel-shots")
SHOT_SIZE = {"width": 560, "height": 1090}
SHOT_SEEDS = {"dark": 11, "light": 12}
RUNS_FOR_A_SPEED = 3
"""One cold run, then the two warm runs a worker's speed needs before its card shows it."""
MARKUP_NAME = "<img src=x onerror=alert(1)>"
SECRET_TOKEN = "pod-secret-token-0123456789"
MASKED_TOKEN = "\u2022\u2022\u2022\u20226789"
UI_TIMEOUT_MS = 30_000

expect.set_options(timeout=UI_TIMEOUT_MS)


# --- processes ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def worker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ComfyInstance]:
    instance = ComfyInstance("worker", tmp_path_factory.mktemp("panel-worker"))
    try:
        instance.start().wait_ready()
        yield instance
    finally:
        instance.stop()


@pytest.fixture(scope="module")
def master(tmp_path_factory: pytest.TempPathFactory, worker: ComfyInstance, frontend: Frontend) -> Iterator[ComfyInstance]:
    base_dir = tmp_path_factory.mktemp(f"panel-master-{frontend.name}")
    instance = ComfyInstance(
        "master", base_dir, with_extension=True, env={"DISTRIBUTED_WORKERS_FILE": str(base_dir / "workers.json")},
        extra_args=frontend.master_args(),
    )
    try:
        instance.start().wait_ready()
        yield instance
    finally:
        instance.stop()


@pytest.fixture
def registry(master: ComfyInstance) -> ComfyInstance:
    """The master with no workers and default settings, whatever the previous test left."""
    status, body = master.get("/distributed/workers")
    assert status == 200, body
    for entry in body["workers"]:
        assert http_json("DELETE", f"{master.url}/distributed/workers/{entry['id']}")[0] == 200
    status, body = http_json("PATCH", f"{master.url}/distributed/config", {
        "master": {"participate": True},
        "settings": {"auto_launch": False, "stop_workers_on_exit": True, "distributed_queue": False},
    })
    assert status == 200, body
    return master


def add_worker(master: ComfyInstance, **fields: Any) -> dict[str, Any]:
    status, body = master.post("/distributed/workers", fields)
    assert status == 201, body
    return body


def worker_state(master: ComfyInstance, worker_id: str) -> str | None:
    status, body = master.get("/distributed/workers")
    found = [w for w in body["workers"] if w["id"] == worker_id] if status == 200 else []
    return found[0]["status"]["state"] if found else None


def sleepy_run(seed: int) -> dict[str, Any]:
    """One share per GPU, each a second of "sampling" in 4 steps; a new seed escapes ComfyUI's cache."""
    return {
        "1": {"class_type": "DistributedSeed", "inputs": {"seed": seed}},
        "2": {"class_type": "DistTestSeedStamp", "inputs": {"seed": ["1", 0], "width": 16, "height": 16, "batch_size": 1}},
        "3": {"class_type": "DistTestSleep", "inputs": {"images": ["2", 0], "seconds": 1.0, "steps": 4}},
        "4": {"class_type": "DistributedCollector", "inputs": {"images": ["3", 0]}},
        "5": {"class_type": "PreviewImage", "inputs": {"images": ["4", 0]}},
    }


def stored_worker(master: ComfyInstance, worker_id: str) -> dict[str, Any]:
    """The worker as workers.json holds it, secrets included (the API only shows them masked)."""
    config = json.loads(Path(master.env["DISTRIBUTED_WORKERS_FILE"]).read_text())
    return next(w for w in config["workers"] if w["id"] == worker_id)


def set_palette(master: ComfyInstance, palette: str) -> None:
    status, body = master.post("/settings/Comfy.ColorPalette", palette)
    assert status == 200, body


# --- browser ------------------------------------------------------------------------------------


@pytest.fixture
def dialogs() -> list[str]:
    """Messages of every alert/confirm/prompt the page opened (dismissed at once)."""
    return []


@pytest.fixture
def page(browser: Any, registry: ComfyInstance, dialogs: list[str]) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 860})
    opened = context.new_page()
    opened.set_default_timeout(UI_TIMEOUT_MS)

    def on_dialog(dialog: Any) -> None:
        dialogs.append(dialog.message)
        dialog.dismiss()

    opened.on("dialog", on_dialog)
    try:
        opened.goto(registry.url)
        yield opened
    finally:
        context.close()


def open_panel(page: Page) -> Any:
    return open_distributed_tab(page)


def open_cloud_worker_form(page: Page, name: str, url: str) -> tuple[Any, Any]:
    """The panel and its add-worker form, filled in for a cloud worker."""
    panel = open_panel(page)
    panel.get_by_role("button", name="Add worker", exact=True).first.click()
    form = panel.get_by_role("form", name="Add a worker")
    form.get_by_label("Name", exact=True).fill(name)
    form.get_by_label("Type").select_option("cloud")
    form.get_by_label("URL").fill(url)
    return panel, form


def worker_card(panel: Any, name: str) -> Any:
    return panel.get_by_role("article", name=f"Worker {name}", exact=True)


def fill_worker_form(panel: Any, name: str, port: int | str, host: str = "127.0.0.1") -> Any:
    panel.get_by_role("button", name="Add worker", exact=True).first.click()
    form = panel.get_by_role("form", name="Add a worker")
    form.get_by_label("Name", exact=True).fill(name)
    form.get_by_label("Type").select_option("remote")
    form.get_by_label("Host").fill(host)
    form.get_by_label("Port").fill(str(port))
    form.get_by_role("button", name="Add worker").click()
    return form


# --- tests --------------------------------------------------------------------------------------


def test_the_tab_opens_on_the_master_card_and_an_empty_worker_list(page: Page) -> None:
    panel = open_panel(page)
    expect(page.get_by_role("dialog")).to_have_count(0)  # no first-run dialog in the way, in either frontend
    expect(panel.get_by_role("heading", name="Distributed")).to_be_visible()
    expect(panel.get_by_role("article", name="Master")).to_contain_text("Renders a share of each run")
    expect(panel.get_by_text("No workers yet.")).to_be_visible()


def test_a_worker_added_through_the_form_turns_online(page: Page, worker: ComfyInstance) -> None:
    panel = open_panel(page)
    form = fill_worker_form(panel, "Second GPU", worker.port)
    expect(form).to_be_hidden()
    card = worker_card(panel, "Second GPU")
    expect(card).to_contain_text(f"127.0.0.1:{worker.port}")
    expect(card.locator(".dgpu-status")).to_have_text("Online · idle")


def test_disabling_a_worker_marks_it_disabled_in_the_panel_and_the_registry(
    page: Page, registry: ComfyInstance, worker: ComfyInstance,
) -> None:
    created = add_worker(registry, name="Spare", type="remote", host="127.0.0.1", port=worker.port)
    card = worker_card(open_panel(page), "Spare")
    expect(card.get_by_role("switch", name="Enabled")).to_be_checked()
    card.get_by_role("switch", name="Enabled").click()
    expect(card.locator(".dgpu-status")).to_have_text("Disabled")
    expect(card.get_by_role("switch", name="Enabled")).not_to_be_checked()
    body = registry.get("/distributed/workers")[1]
    assert [w["enabled"] for w in body["workers"] if w["id"] == created["id"]] == [False]


def test_a_bad_port_is_reported_beside_the_port_field(page: Page, registry: ComfyInstance) -> None:
    panel = open_panel(page)
    form = fill_worker_form(panel, "Typo", 70000)
    port = form.get_by_label("Port")
    expect(port).to_have_attribute("aria-invalid", "true")
    expect(form.locator(".dgpu-field[data-field='port'] .dgpu-field-error")).to_contain_text("65535")
    expect(form.locator(".dgpu-field[data-field='name'] .dgpu-field-error")).to_be_hidden()
    assert registry.get("/distributed/workers")[1]["workers"] == []


def test_a_worker_name_with_markup_is_shown_as_text_only(page: Page, worker: ComfyInstance, dialogs: list[str]) -> None:
    panel = open_panel(page)
    fill_worker_form(panel, MARKUP_NAME, worker.port)
    card = worker_card(panel, MARKUP_NAME)
    expect(card.get_by_role("heading", name=MARKUP_NAME)).to_be_visible()
    expect(card.locator(".dgpu-status")).to_have_text("Online · idle")
    assert page.locator("img[src='x']").count() == 0
    assert panel.locator("img").count() == 0
    assert dialogs == []


def test_a_hand_edit_of_workers_json_shows_up_in_the_open_panel(page: Page, registry: ComfyInstance, worker: ComfyInstance) -> None:
    panel = open_panel(page)
    expect(panel.get_by_text("No workers yet.")).to_be_visible()
    path = Path(registry.env["DISTRIBUTED_WORKERS_FILE"])
    config = json.loads(path.read_text())
    config["workers"].append({"id": "by-hand", "name": "Typed by hand", "type": "remote", "host": "127.0.0.1", "port": worker.port})
    path.write_text(json.dumps(config, indent=2))
    expect(worker_card(panel, "Typed by hand")).to_be_visible(timeout=10_000)


def test_test_connection_says_the_connection_was_refused(page: Page, registry: ComfyInstance) -> None:
    add_worker(registry, name="Nobody home", type="remote", host="127.0.0.1", port=free_port())
    card = worker_card(open_panel(page), "Nobody home")
    card.get_by_role("button", name="Test connection").click()
    expect(card.get_by_role("status")).to_contain_text("Connection refused")


def test_a_distributed_run_shows_progress_up_to_100_percent(page: Page, registry: ComfyInstance, worker: ComfyInstance) -> None:
    created = add_worker(registry, name="Helper", type="remote", host="127.0.0.1", port=worker.port)
    wait_until(lambda: worker_state(registry, created["id"]) == "online", 30, message="the worker to be online")
    panel = open_panel(page)
    expect(worker_card(panel, "Helper").locator(".dgpu-status")).to_have_text("Online · idle")
    prompt_id = registry.queue_prompt(sleepy_run(7))
    run = panel.get_by_role("region", name="Distributed run")
    expect(run).to_be_visible()
    expect(run.get_by_role("progressbar", name="Overall progress")).to_have_attribute("aria-valuenow", "100")
    expect(run).to_contain_text("Finished")
    expect(run.get_by_role("listitem")).to_have_count(2)
    expect(run.locator(".dgpu-tag")).to_have_text("Fan-out")
    assert registry.wait_history(prompt_id)["status"]["status_str"] == "success"


def test_a_cloud_worker_token_is_shown_masked_and_kept_when_another_field_is_edited(page: Page, registry: ComfyInstance) -> None:
    created = add_worker(
        registry, name="Token pod", type="cloud", url="https://pod-8188.example.invalid", auth_token=SECRET_TOKEN, enabled=False,
    )
    patch_bodies: list[str] = []
    page.on("request", lambda request: patch_bodies.append(request.post_data or "") if request.method == "PATCH" else None)
    panel = open_panel(page)
    card = worker_card(panel, "Token pod")
    expect(card).to_contain_text(f"token {MASKED_TOKEN}")
    card.get_by_role("button", name="Edit").click()
    form = panel.get_by_role("form", name="Edit Token pod")
    expect(form).to_contain_text(MASKED_TOKEN)
    expect(form.get_by_label("Access token")).to_have_value("")
    assert SECRET_TOKEN not in page.content()
    form.get_by_label("Name", exact=True).fill("Token pod renamed")
    form.get_by_role("button", name="Save", exact=True).click()
    expect(worker_card(panel, "Token pod renamed")).to_contain_text(f"token {MASKED_TOKEN}")
    assert len(patch_bodies) == 1 and "auth_token" not in json.loads(patch_bodies[0])
    assert stored_worker(registry, created["id"])["auth_token"] == SECRET_TOKEN


def test_removing_a_saved_token_deletes_it_from_workers_json(page: Page, registry: ComfyInstance) -> None:
    created = add_worker(
        registry, name="Token pod", type="cloud", url="https://pod-8188.example.invalid", auth_token=SECRET_TOKEN, enabled=False,
    )
    panel = open_panel(page)
    worker_card(panel, "Token pod").get_by_role("button", name="Edit").click()
    form = panel.get_by_role("form", name="Edit Token pod")
    form.get_by_role("button", name="Remove token").click()
    expect(form).to_contain_text("removed when you save")
    form.get_by_role("button", name="Save", exact=True).click()
    expect(form).to_be_hidden()
    expect(worker_card(panel, "Token pod")).not_to_contain_text("token")
    assert stored_worker(registry, created["id"]).get("auth_token") is None


def test_a_cloud_worker_added_with_a_token_and_a_header_stores_both(page: Page, registry: ComfyInstance) -> None:
    panel, form = open_cloud_worker_form(page, "Tunnel", "https://tunnel.example.invalid")
    form.get_by_label("Access token").fill(SECRET_TOKEN)
    form.get_by_role("button", name="Add header").click()
    form.get_by_label("Header name").fill("CF-Access-Client-Id")
    form.get_by_label("Header value").fill("client-id-0123456789")
    form.get_by_role("button", name="Add worker").click()
    card = worker_card(panel, "Tunnel")
    expect(card).to_contain_text(f"token {MASKED_TOKEN} · 1 header")
    stored = stored_worker(registry, card.get_attribute("data-worker-id") or "")
    assert stored["auth_token"] == SECRET_TOKEN
    assert stored["headers"] == {"CF-Access-Client-Id": "client-id-0123456789"}


def test_a_bad_header_name_is_reported_beside_the_headers(page: Page, registry: ComfyInstance) -> None:
    _, form = open_cloud_worker_form(page, "Tunnel", "https://tunnel.example.invalid")
    form.get_by_role("button", name="Add header").click()
    form.get_by_label("Header name").fill("Not a header")
    form.get_by_label("Header value").fill("x")
    form.get_by_role("button", name="Add worker").click()
    expect(form.locator(".dgpu-field[data-field='headers'] .dgpu-field-error")).to_contain_text("Not a header")
    assert registry.get("/distributed/workers")[1]["workers"] == []


def test_turning_certificate_checks_off_shows_a_warning_in_the_form_and_on_the_card(page: Page, registry: ComfyInstance) -> None:
    add_worker(registry, name="Self-signed pod", type="cloud", url="https://pod-8188.example.invalid", enabled=False)
    panel = open_panel(page)
    card = worker_card(panel, "Self-signed pod")
    card.get_by_role("button", name="Edit").click()
    form = panel.get_by_role("form", name="Edit Self-signed pod")
    expect(form.get_by_text("Certificate checks are off")).to_be_hidden()
    form.get_by_label("Verify the TLS certificate").uncheck()
    expect(form.get_by_text("Certificate checks are off")).to_be_visible()
    form.get_by_role("button", name="Save", exact=True).click()
    expect(card.get_by_role("list", name="Warnings")).to_contain_text("verification is off")


def test_the_distributed_queue_switch_is_saved_in_the_settings(page: Page, registry: ComfyInstance) -> None:
    panel = open_panel(page)
    panel.get_by_text("Settings", exact=True).click()
    switch = panel.get_by_role("switch", name="Distributed queue")
    expect(switch).not_to_be_checked()
    switch.click()
    expect(switch).to_be_checked()
    wait_until(lambda: registry.get("/distributed/workers")[1]["settings"]["distributed_queue"] is True, 10,
               message="distributed_queue to be saved")


def test_a_local_worker_is_launched_followed_in_its_log_and_stopped(page: Page, registry: ComfyInstance) -> None:
    status, body = registry.post("/distributed/workers/no-such-worker/launch")
    if status in (404, 405) and not (isinstance(body, dict) and "error" in body):
        pytest.skip("the master has no POST /distributed/workers/{id}/launch route yet (issue 3)")
    worker = add_worker(registry, name="Local GPU", type="local", port=free_port(), extra_args="")
    card = worker_card(open_panel(page), "Local GPU")
    card.get_by_role("button", name="Launch").click()
    expect(card.locator(".dgpu-status")).to_have_text("Online · idle", timeout=120_000)
    card.get_by_role("button", name="View log").click()
    log = card.get_by_role("region", name="Local GPU log")
    expect(log.locator("pre")).to_contain_text("Starting server")

    def answer_after_the_stopped_push(route: Any) -> None:
        # Holding the answer to Stop back until the pushed status has gone out makes the panel see the
        # two in the other order; whichever comes last, the card must end on the newer one.
        answer = route.fetch()
        wait_until(lambda: worker_state(registry, worker["id"]) == "stopped", 60, message="the worker to be stopped")
        route.fulfill(response=answer)

    page.route("**/distributed/workers/*/stop", answer_after_the_stopped_push)
    # The card may show Stopped before the held answer is sent: wait for the answer too, so that no
    # route callback is still in flight when the page closes.
    with page.expect_response("**/distributed/workers/*/stop", timeout=90_000):
        card.get_by_role("button", name="Stop").click()
    expect(card.locator(".dgpu-status")).to_have_text("Stopped", timeout=60_000)
    expect(card.locator(".dgpu-status")).not_to_have_class(re.compile("dgpu-status-(offline|error)"))


@pytest.mark.parametrize("palette", ["dark", "light"])
def test_the_panel_is_captured_in_the_light_and_dark_themes(
    browser: Any, registry: ComfyInstance, worker: ComfyInstance, palette: str, tmp_path_factory: pytest.TempPathFactory,
    frontend: Frontend,
) -> None:
    add_worker(registry, name="Studio PC", type="remote", host="127.0.0.1", port=worker.port)
    add_worker(registry, name="Laptop", type="remote", host="127.0.0.1", port=free_port())
    add_worker(
        registry, name="Cloud pod", type="cloud", url="https://pod-8188.example.invalid", enabled=False,
        auth_token=SECRET_TOKEN, tls_verify=False,
    )
    set_palette(registry, palette)
    context = browser.new_context(viewport={"width": 1100, "height": SHOT_SIZE["height"]})
    try:
        shot_page = context.new_page()
        shot_page.set_default_timeout(UI_TIMEOUT_MS)
        shot_page.goto(registry.url)
        panel = open_panel(shot_page)
        expect(worker_card(panel, "Studio PC").locator(".dgpu-status")).to_have_text("Online · idle")
        expect(worker_card(panel, "Laptop").locator(".dgpu-status")).to_have_text("Offline")
        # A card shows its speed once two warm runs agree (docs/scheduling.md); a worker's first run is cold.
        for run in range(RUNS_FOR_A_SPEED):
            prompt_id = registry.queue_prompt(sleepy_run(SHOT_SEEDS[palette] * 100 + run))
            registry.wait_history(prompt_id)
        expect(panel.get_by_role("region", name="Distributed run")).to_contain_text("Finished")
        expect(worker_card(panel, "Studio PC")).to_contain_text("speed")
        expect(worker_card(panel, "Studio PC").locator(".dgpu-status")).to_have_text("Online · idle")
        out_dir = tmp_path_factory.getbasetemp() / "output" / "panel-shots"
        out_dir.mkdir(parents=True, exist_ok=True)
        path = out_dir / (f"panel-{palette}.png" if frontend.is_pinned else f"panel-{palette}-{frontend.name}.png")
        shot_page.screenshot(path=str(path), clip={"x": 0, "y": 0, **SHOT_SIZE})
        SHOTS_COPY_DIR.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, SHOTS_COPY_DIR / path.name)
        assert path.stat().st_size > 0
    finally:
        context.close()
        set_palette(registry, "dark")
