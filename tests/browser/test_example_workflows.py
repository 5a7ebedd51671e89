"""The example workflows, opened the way a user does: Templates → ComfyUI Distributed GPU → a card.

ComfyUI lists a custom node pack's `example_workflows/*.json` in its Templates browser, under the
pack's folder name (locales/en/main.json gives it a readable one), each with a same-name `.jpg`
thumbnail. Every test runs against the pinned frontend and the newest (tests/browser/conftest.py).
The model-free example also runs end to end on a master with two real CPU workers.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import pytest

from tests.harness import PROJECT_DIR, ComfyInstance, running, wait_until

playwright_api = pytest.importorskip("playwright.sync_api")
expect = playwright_api.expect
Page = playwright_api.Page

from tests.browser.ui import UI_TIMEOUT_MS, Frontend, open_distributed_tab, open_pack_templates, opened_page  # noqa: E402

EXAMPLES_DIR = PROJECT_DIR / "example_workflows"
EXAMPLES = sorted(path.stem for path in EXAMPLES_DIR.glob("*.json"))
TRY_IT = "Try it without models"
WORKER_NAMES = ("CPU worker 1", "CPU worker 2")
STOCK_AUDIO_NODES = {"EmptyLatentAudio", "VAEDecodeAudio", "SaveAudio"}
"""ComfyUI's audio nodes, which it only registers where torchaudio imports."""
RUN_TIMEOUT_MS = 180_000

expect.set_options(timeout=UI_TIMEOUT_MS)


def example(name: str) -> dict[str, Any]:
    return json.loads((EXAMPLES_DIR / f"{name}.json").read_text())


def written_widgets(name: str) -> dict[str, dict[str, Any]]:
    """node id -> the widget values scripts/example_workflows.py gave it by name (the file holds them by place)."""
    spec = importlib.util.spec_from_file_location("example_workflows", PROJECT_DIR / "scripts" / "example_workflows.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    (workflow,) = [wf for wf in module.examples() if wf.name == name]
    not_in_prompt = {"control_after_generate", "text_value", "upload"}  # the frontend's own controls
    return {
        str(node.id): {key: value for key, value in node.widgets.items() if key not in not_in_prompt and key not in node.linked}
        for node in workflow.nodes if node.type != "MarkdownNote"
    }


def node_types(workflow: dict[str, Any]) -> list[str]:
    return sorted(node["type"] for node in workflow["nodes"])


def models(workflow: dict[str, Any]) -> list[dict[str, str]]:
    return [model for node in workflow["nodes"] for model in node.get("properties", {}).get("models", [])]


# --- processes ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def workers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ComfyInstance, ...]]:
    """Two plain ComfyUI workers (no extension, no test nodes), shared by both frontends' masters."""
    base = tmp_path_factory.mktemp("examples-workers")
    instances = tuple(ComfyInstance(f"worker-{n}", base / f"worker-{n}", with_node_pack=False) for n in (1, 2))
    with running(*instances):
        yield instances


@pytest.fixture(scope="module")
def master(tmp_path_factory: pytest.TempPathFactory, workers: tuple[ComfyInstance, ...], frontend: Frontend) -> Iterator[ComfyInstance]:
    """A master that renders a share itself, with both workers in its registry."""
    base_dir = tmp_path_factory.mktemp(f"examples-master-{frontend.name}")
    workers_file = base_dir / "workers.json"
    workers_file.write_text(json.dumps({
        "version": 1,
        "master": {"participate": True},
        "settings": {"health_interval": 0.5},
        "workers": [
            {"id": f"cpu-{n}", "name": name, "type": "remote", "host": "127.0.0.1", "port": worker.port}
            for n, (name, worker) in enumerate(zip(WORKER_NAMES, workers, strict=True), start=1)
        ],
    }, indent=2))
    instance = ComfyInstance(
        "master", base_dir, with_extension=True, with_node_pack=False,
        env={"DISTRIBUTED_WORKERS_FILE": str(workers_file)}, extra_args=frontend.master_args(),
    )
    with running(instance):
        yield instance


@pytest.fixture(scope="module")
def server_node_types(master: ComfyInstance) -> set[str]:
    status, body = master.get("/object_info")
    assert status == 200, body
    return set(body)


@pytest.fixture
def fresh_page(browser: Any, master: ComfyInstance) -> Iterator[Page]:
    with opened_page(browser, master.url) as opened:
        yield opened


@pytest.fixture(scope="module")
def shared_page(browser: Any, master: ComfyInstance) -> Iterator[Page]:
    """One page per frontend for the tests that open an example: ComfyUI's first load is what costs."""
    with opened_page(browser, master.url) as opened:
        yield opened


@pytest.fixture
def page(shared_page: Page) -> Page:
    """The shared page with no dialog left open by the previous test (the pinned frontend's Missing Models)."""
    dialogs = shared_page.get_by_role("dialog")
    for _ in range(3):
        open_now = dialogs.count()
        if open_now == 0:
            break
        shared_page.keyboard.press("Escape")
        expect(dialogs).to_have_count(open_now - 1)
    expect(dialogs).to_have_count(0)
    return shared_page


def last_finished_prompt(master: ComfyInstance) -> dict[str, Any] | None:
    """The newest history entry, once the prompt has finished (the panel may say so a moment before)."""
    status, history = master.get("/history?max_items=1")
    entries = list(history.values()) if status == 200 and isinstance(history, dict) else []
    return entries[0] if entries and entries[0].get("status", {}).get("completed") is not None else None


def workers_online(master: ComfyInstance) -> bool:
    status, body = master.get("/distributed/workers")
    return status == 200 and all(w["status"]["state"] == "online" for w in body["workers"])


# --- the page -----------------------------------------------------------------------------------


def open_example(page: Page, name: str) -> None:
    """Clicks the example's card in the Templates browser and waits until its graph is on the canvas.

    The nodes on the canvas before are marked, so a graph with the same node types (SD1.5 and SDXL,
    or the same example twice on the shared page) is not taken for the new one.
    """
    page.evaluate("() => window.app?.graph?.nodes?.forEach(n => { n.dgpuBeforeTemplate = true })")
    dialog = open_pack_templates(page)
    dialog.get_by_role("heading", name=name, exact=True).click()
    page.wait_for_function(
        """types => {
            const nodes = window.app?.graph?.nodes ?? [];
            return nodes.every(n => !n.dgpuBeforeTemplate) && JSON.stringify(nodes.map(n => n.type).sort()) === JSON.stringify(types);
        }""",
        arg=node_types(example(name)), timeout=UI_TIMEOUT_MS,
    )


def unknown_node_types(page: Page) -> list[str]:
    return page.evaluate("() => app.graph.nodes.map(n => n.type).filter(t => !(t in LiteGraph.registered_node_types))")


def prompt_inputs(page: Page) -> dict[str, dict[str, Any]]:
    """node id -> inputs of the API prompt the frontend would queue for the open graph."""
    return page.evaluate(
        "async () => Object.fromEntries(Object.entries((await app.graphToPrompt()).output).map(([id, n]) => [id, n.inputs]))",
    )


def expect_model_download_offered(page: Page, frontend: Frontend, model: dict[str, str]) -> None:
    """The frontend offers to download a loader's missing model from the workflow's `models` metadata."""
    if frontend.is_pinned:
        missing = page.get_by_role("dialog").filter(has=page.get_by_role("heading", name="Missing Models"))
        expect(missing.get_by_role("option", name=f"{model['directory']} / {model['name']}")).to_be_visible()
        expect(missing.get_by_role("button", name="Download")).to_be_visible()
    else:
        details = page.get_by_role("button", name="Download all")
        if not details.is_visible():
            page.get_by_role("button", name="View details").first.click()
        expect(page.get_by_role("button", name=f"Download {model['name']}", exact=True)).to_be_visible()


# --- tests --------------------------------------------------------------------------------------


def test_the_templates_browser_lists_every_example_with_its_thumbnail(fresh_page: Page) -> None:
    assert TRY_IT in EXAMPLES
    dialog = open_pack_templates(fresh_page)
    for name in EXAMPLES:
        heading = dialog.get_by_role("heading", name=name, exact=True)
        expect(heading).to_be_visible()
        heading.scroll_into_view_if_needed()  # the cards draw their thumbnails only once in view
        thumbnail = dialog.get_by_role("img", name=name, exact=True).first
        expect(thumbnail).to_be_visible()
        wait_until(lambda thumb=thumbnail: thumb.evaluate("img => img.complete && img.naturalWidth > 0"), 30,
                   message=f"the thumbnail of {name} to load")


@pytest.mark.parametrize("name", EXAMPLES)
def test_each_example_opens_from_the_templates_browser_with_every_node_known_and_linked(
    page: Page, frontend: Frontend, server_node_types: set[str], name: str,
) -> None:
    workflow = example(name)
    lacking = sorted(STOCK_AUDIO_NODES & set(node_types(workflow)) - server_node_types)
    if lacking:
        pytest.skip(f"this ComfyUI has no {', '.join(lacking)}: its audio nodes need torchaudio, which has no build for its torch")
    open_example(page, name)
    assert unknown_node_types(page) == []
    inputs = prompt_inputs(page)
    by_id = {node["id"]: node for node in workflow["nodes"]}
    for _, source, slot, target, target_slot, _ in workflow["links"]:
        input_name = by_id[target]["inputs"][target_slot]["name"]
        assert inputs[str(target)][input_name] == [str(source), slot], f"{by_id[target]['type']}.{input_name}"
    for node_id, widgets in written_widgets(name).items():  # widgets_values read in the order they were written
        shown = {key: value for key, value in inputs[node_id].items() if key in widgets}
        assert shown == widgets, f"{by_id[int(node_id)]['type']} (node {node_id})"
    for model in models(workflow):
        expect_model_download_offered(page, frontend, model)


def test_try_it_without_models_runs_on_the_master_and_both_workers(page: Page, master: ComfyInstance) -> None:
    wait_until(lambda: workers_online(master), 60, message="both workers to be online")
    open_example(page, TRY_IT)
    page.get_by_role("button", name="Run", exact=True).click()
    panel = open_distributed_tab(page)
    run = panel.get_by_role("region", name="Distributed run")
    expect(run).to_contain_text("Finished", timeout=RUN_TIMEOUT_MS)
    shares = run.get_by_role("listitem")
    expect(shares).to_have_count(3)
    for participant in ("Master", *WORKER_NAMES):
        expect(shares.filter(has_text=participant)).to_contain_text("Done")
    entry = wait_until(lambda: last_finished_prompt(master), 60, message="the run in the master's history")
    assert entry["status"]["status_str"] == "success"
    images = [image for output in entry["outputs"].values() for image in output.get("images", [])]
    assert len(images) == 3
    pictures = {(master.output_dir / image["subfolder"] / image["filename"]).read_bytes() for image in images}
    assert len(pictures) == 3, "each participant's picture has its own seed"


def test_the_master_lists_every_example_under_the_pack_with_a_jpg_thumbnail(master: ComfyInstance) -> None:
    status, body = master.get("/workflow_templates")
    assert status == 200, body
    assert sorted(body["comfyui-distributed-gpu"]) == EXAMPLES
    for name in EXAMPLES:
        assert master.get(f"/api/workflow_templates/comfyui-distributed-gpu/{quote(name)}.jpg")[0] == 200, name
