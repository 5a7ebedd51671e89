"""Reading ComfyUI's model metadata from a saved workflow (both places the frontend reads)."""

from __future__ import annotations

from typing import Any

from distributed.transport.provision.workflow import model_sources

SHA = "a" * 64


def entry(name: str, url: str, directory: str = "checkpoints", **more: Any) -> dict[str, Any]:
    return {"name": name, "url": url, "directory": directory, **more}


def test_top_level_and_node_entries_are_both_read() -> None:
    workflow = {
        "nodes": [{"id": 4, "type": "LoraLoader", "widgets_values": ["style.safetensors", 1, 1],
                   "properties": {"models": [entry("style.safetensors", "https://example.com/style.safetensors", "loras")]}}],
        "models": [entry("base.safetensors", "https://example.com/base.safetensors", hash=SHA.upper(), hash_type="SHA256")],
    }

    sources, problems = model_sources(workflow)

    assert [(s.name, s.directory, s.sha256) for s in sources] == [
        ("style.safetensors", "loras", None), ("base.safetensors", "checkpoints", SHA)]
    assert problems == []


def test_a_node_entry_counts_only_for_the_file_its_widget_names_now() -> None:
    workflow = {"nodes": [{"id": 1, "widgets_values": ["new.safetensors"], "properties": {"models": [
        entry("old.safetensors", "https://example.com/old"), entry("new.safetensors", "https://example.com/new")]}}]}

    assert [s.name for s in model_sources(workflow)[0]] == ["new.safetensors"]


def test_subgraph_nodes_are_read_too() -> None:
    workflow = {"nodes": [], "definitions": {"subgraphs": [{"name": "inner", "nodes": [
        {"id": 9, "widgets_values": {"vae_name": "ae.safetensors"},
         "properties": {"models": [entry("ae.safetensors", "https://example.com/ae", "vae")]}}]}]}}

    assert [(s.name, s.directory) for s in model_sources(workflow)[0]] == [("ae.safetensors", "vae")]


def test_entries_are_deduplicated_by_url_and_legacy_folders_mapped() -> None:
    same = entry("unet.safetensors", "https://example.com/u", "unet")
    workflow = {"models": [same, same], "nodes": [{"id": 1, "widgets_values": ["unet.safetensors"], "properties": {"models": [same]}}]}

    assert [(s.name, s.directory) for s in model_sources(workflow)[0]] == [("unet.safetensors", "diffusion_models")]


def test_a_hash_of_another_type_is_kept_apart_and_never_taken_for_a_sha256() -> None:
    workflow = {"models": [entry("a.safetensors", "https://example.com/a", hash="0" * 32, hash_type="md5")]}

    source = model_sources(workflow)[0][0]

    assert source.sha256 is None and source.other_hash == "md5:" + "0" * 32


def test_hostile_entries_are_reported_and_never_used() -> None:
    workflow = {"models": [
        entry("../../.bashrc", "https://example.com/x"),
        entry("x.safetensors", "file:///etc/passwd"),
        entry("y.safetensors", "https://example.com/$(reboot)"),
        entry("z.safetensors", "https://example.com/z", "../custom_nodes"),
        {"name": "w.safetensors"},
        "not an object",
    ]}

    sources, problems = model_sources(workflow)

    assert sources == []
    assert len(problems) == 6 and all(line.startswith("workflow: models entry") for line in problems)
    assert "not a plain http(s) address" in problems[1] and "not a plain folder name" in problems[3]


def test_a_workflow_without_metadata_has_no_sources() -> None:
    assert model_sources(None) == ([], [])
    assert model_sources({"nodes": "garbage", "models": 3}) == ([], [])
