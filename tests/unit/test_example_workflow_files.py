"""example_workflows/ holds what scripts/example_workflows.py writes, in the frontend's saved format."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

PROJECT_DIR = Path(__file__).resolve().parents[2]
EXAMPLES_DIR = PROJECT_DIR / "example_workflows"


def generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("example_workflows", PROJECT_DIR / "scripts" / "example_workflows.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


def test_the_example_files_are_what_the_script_writes() -> None:
    module = generator()
    wanted = {f"{wf.name}.json": module.render(wf) for wf in module.examples()}
    assert sorted(path.name for path in EXAMPLES_DIR.glob("*.json")) == sorted(wanted)
    for name, text in wanted.items():
        assert (EXAMPLES_DIR / name).read_text() == text, f"{name} differs: run python scripts/example_workflows.py"


def test_every_example_has_a_jpg_thumbnail_of_the_same_name() -> None:
    for path in EXAMPLES_DIR.glob("*.json"):
        thumbnail = path.with_suffix(".jpg")
        assert thumbnail.is_file(), thumbnail.name
        assert thumbnail.read_bytes()[:3] == b"\xff\xd8\xff", f"{thumbnail.name} is not a JPEG"


def test_every_link_joins_an_output_to_an_input_of_the_same_type() -> None:
    """An output of any type ("*", the Distributed Value's) may feed any input; the link has the input's type."""
    for path in EXAMPLES_DIR.glob("*.json"):
        workflow = json.loads(path.read_text())
        nodes = {node["id"]: node for node in workflow["nodes"]}
        for link_id, source, slot, target, target_slot, kind in workflow["links"]:
            output = nodes[source]["outputs"][slot]
            target_input = nodes[target]["inputs"][target_slot]
            assert link_id in output["links"] and target_input["link"] == link_id, f"{path.name}: link {link_id}"
            assert target_input["type"] == kind and output["type"] in (kind, "*"), f"{path.name}: link {link_id}"


def example_nodes(name: str) -> dict[str, dict]:
    """type -> node, for an example with one node of each type that matters here."""
    return {node["type"]: node for node in json.loads((EXAMPLES_DIR / f"{name}.json").read_text())["nodes"]}


def linked_sources(name: str, node_type: str) -> dict[str, str]:
    """input name -> the type of the node feeding it, for the node of `node_type` in an example."""
    workflow = json.loads((EXAMPLES_DIR / f"{name}.json").read_text())
    types = {node["id"]: node["type"] for node in workflow["nodes"]}
    (target,) = [node for node in workflow["nodes"] if node["type"] == node_type]
    by_link = {link[0]: types[link[1]] for link in workflow["links"]}
    return {entry["name"]: by_link[entry["link"]] for entry in target["inputs"] if entry["link"] is not None}


def test_the_upscale_example_refines_a_loaded_image_with_the_sd15_checkpoint() -> None:
    sources = linked_sources("Upscale with every GPU (SD1.5)", "DistributedUpscale")
    assert sources == {"image": "LoadImage", "model": "CheckpointLoaderSimple", "positive": "CLIPTextEncode",
                       "negative": "CLIPTextEncode", "vae": "CheckpointLoaderSimple"}
    loader = example_nodes("Upscale with every GPU (SD1.5)")["CheckpointLoaderSimple"]
    assert loader["properties"]["models"][0]["name"] == "v1-5-pruned-emaonly-fp16.safetensors"


def test_the_cfg_example_gives_each_of_four_shares_its_own_cfg_from_one_seed() -> None:
    nodes = example_nodes("Compare cfg values across GPUs (SD1.5)")
    assert "DistributedSeed" not in nodes, "every share renders the same seed, so only cfg differs"
    assert linked_sources("Compare cfg values across GPUs (SD1.5)", "KSampler")["cfg"] == "DistributedValue"
    values, value_type, _ = nodes["DistributedValue"]["widgets_values"]
    assert value_type == "FLOAT" and len(values.splitlines()) == 4
    assert nodes["DistributedCollector"]["widgets_values"][0] == 4
    assert "DistributedSaveImage" in nodes, "each picture keeps the cfg that made it"


def test_model_loaders_carry_the_download_metadata_the_frontend_reads() -> None:
    loaders = {"CheckpointLoaderSimple", "CLIPLoader"}
    for path in EXAMPLES_DIR.glob("*.json"):
        for node in json.loads(path.read_text())["nodes"]:
            if node["type"] not in loaders:
                continue
            (model,) = node["properties"]["models"]
            assert model["url"].startswith("https://huggingface.co/") and model["name"] in model["url"], path.name
            assert model["directory"] in ("checkpoints", "text_encoders"), path.name
            assert node["widgets_values"][0] == model["name"], path.name


def test_the_model_free_example_uses_only_stock_nodes_and_ours() -> None:
    ours = {"DistributedSeed", "DistributedCollector", "MarkdownNote"}
    stock = {"EmptyImage", "ImageAddNoise", "ImageScale", "ImageBlur", "SaveImage"}
    workflow = json.loads((EXAMPLES_DIR / "Try it without models.json").read_text())
    assert {node["type"] for node in workflow["nodes"]} == ours | stock
    assert not any(node.get("properties", {}).get("models") for node in workflow["nodes"])
