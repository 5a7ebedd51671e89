"""The panel's elastic pools, in a real Chromium against a real master whose pool starts real CPU
ComfyUIs (tests/elastic/start_member.py). Located by role and text; every wait is on rendered state."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.browser.test_panel import dialogs, expect, open_panel, page, playwright_api, registry, worker_card
from tests.harness import ComfyInstance, comfyui_python, http_json, wait_until

Page = playwright_api.Page
SCRIPTS = Path(__file__).resolve().parents[1] / "elastic"
BOOT_MS = 180_000

__all__ = ["dialogs", "page", "registry"]  # fixtures of the panel tests, used here as they are


@pytest.fixture(scope="module")
def master(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ComfyInstance]:
    """A master of its own (no worker needed): the pools' members are its workers."""
    base_dir = tmp_path_factory.mktemp("pools-master")
    instance = ComfyInstance("master", base_dir, with_extension=True, env={
        "DISTRIBUTED_WORKERS_FILE": str(base_dir / "workers.json"), "DISTRIBUTED_STATE_DIR": str(base_dir / "state"),
    })
    try:
        instance.start().wait_ready()
        yield instance
    finally:
        instance.stop(timeout=60)


@pytest.fixture
def members_dir(tmp_path: Path) -> Path:
    return tmp_path / "members"


def command_lines(members_dir: Path, mode: str) -> tuple[str, str]:
    start = [comfyui_python(), str(SCRIPTS / "start_member.py"), "--dir", str(members_dir), "--mode", mode]
    stop = [comfyui_python(), str(SCRIPTS / "stop_member.py"), "--dir", str(members_dir)]
    return "\n".join(start), "\n".join(stop)


def pool_card(panel: Any, name: str) -> Any:
    return panel.get_by_role("article", name=f"Pool {name}", exact=True)


def add_pool_in_form(panel: Any, name: str, members_dir: Path, mode: str, **numbers: Any) -> None:
    start, stop = command_lines(members_dir, mode)
    panel.get_by_role("button", name="Add pool", exact=True).click()
    form = panel.get_by_role("form", name="Add an elastic pool")
    form.get_by_label("Name", exact=True).fill(name)
    form.get_by_label("Start command").fill(start)
    form.get_by_label("Stop command").fill(stop)
    for label, value in numbers.items():
        form.get_by_label(label).fill(str(value))
    form.get_by_role("button", name="Add pool").click()
    expect(form).to_be_hidden()


def remove_pool(master: ComfyInstance, name: str) -> None:
    http_json("DELETE", f"{master.url}/distributed/pools/{name}")
    wait_until(lambda: not any(p["name"] == name for p in master.get("/distributed/pools")[1]["pools"]), 60,
               message=f"pool {name} and its members gone")


def test_a_pool_added_in_the_panel_shows_its_limits_and_a_failed_start_with_its_output(
    page: Page, registry: ComfyInstance, members_dir: Path,
) -> None:
    panel = open_panel(page)
    expect(panel.get_by_text("No elastic pools.")).to_be_visible()
    try:
        add_pool_in_form(panel, "broken", members_dir, "fail", **{"Budget (member-hours per day)": 2})
        card = pool_card(panel, "broken")
        expect(card).to_contain_text("0–1 member")
        expect(card).to_contain_text("0 of 2 member-hours today")
        card.get_by_role("button", name="Start a member now").click()
        failure = card.locator(".dgpu-pool-failure")
        expect(failure).to_contain_text("exited with code 3 before printing its address")
        failure.locator("summary").click()
        expect(failure.locator("pre")).to_contain_text("cannot create the member: quota exceeded")
        expect(page.get_by_text("Pool broken: member broken-").first).to_be_visible()
    finally:
        remove_pool(registry, "broken")


def test_a_member_started_from_the_panel_comes_online_and_is_stopped_from_it(
    page: Page, registry: ComfyInstance, members_dir: Path,
) -> None:
    start, stop = command_lines(members_dir, "ok")
    status, body = registry.post("/distributed/pools", {
        "name": "gpus", "max": 1, "idle_seconds": 600, "budget_hours_per_day": 2,
        "start_command": start.split("\n"), "stop_command": stop.split("\n"),
    })
    assert status == 201, body
    panel = open_panel(page)
    try:
        card = pool_card(panel, "gpus")
        card.get_by_role("button", name="Start a member now").click()
        member = card.get_by_role("listitem")
        expect(member).to_contain_text("gpus-")
        expect(member).to_contain_text("Online · idle since", timeout=BOOT_MS)
        member_id = member.get_attribute("data-member-id")
        worker = worker_card(panel, member_id)
        expect(worker).to_contain_text("Cloud · pool gpus")
        expect(worker.get_by_role("button", name="Delete")).to_be_hidden()
        card.get_by_role("button", name=f"Stop {member_id}").click()
        expect(member).to_have_count(0, timeout=60_000)
        expect(worker).to_have_count(0)
    finally:
        remove_pool(registry, "gpus")


def test_a_start_refused_by_the_budget_is_said_on_the_card_and_in_a_toast(page: Page, registry: ComfyInstance, members_dir: Path) -> None:
    def refused_pool() -> dict[str, Any]:
        return next((p for p in registry.get("/distributed/pools")[1]["pools"] if p["name"] == "thrifty"), {})

    def answer_after_the_refusal_is_pushed(route: Any) -> None:
        # The answer to "Add pool" says nothing is blocked yet; holding it back until the master has
        # pushed the refusal makes it arrive after the push, and the card must still show the refusal.
        if route.request.method != "POST":
            route.fallback()
            return
        answer = route.fetch()
        wait_until(lambda: refused_pool().get("blocked"), 60, message="the master to refuse the start")
        route.fulfill(response=answer)

    panel = open_panel(page)
    try:
        page.route("**/distributed/pools", answer_after_the_refusal_is_pushed)
        # A member runs at least its idle time (60 s), more than this budget of 36 s.
        with page.expect_response(lambda r: r.url.endswith("/distributed/pools") and r.request.method == "POST", timeout=90_000):
            add_pool_in_form(panel, "thrifty", members_dir, "ok", **{
                "Min members": 1, "Stop a member idle for (seconds)": 60, "Budget (member-hours per day)": 0.01,
            })
        card = pool_card(panel, "thrifty")
        expect(card.get_by_role("status")).to_contain_text("Not growing: budget: 0.00 of 0.01 member-hours used today")
        expect(page.get_by_text("Pool thrifty: no new member, budget")).to_be_visible()
        expect(card.get_by_role("listitem")).to_have_count(0)
    finally:
        remove_pool(registry, "thrifty")
