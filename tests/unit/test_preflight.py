"""Preflight: what a worker lacks, read from its object info (plain dicts, no ComfyUI)."""

from __future__ import annotations

from typing import Any

from distributed.transport.preflight import review

OBJECT_INFO: dict[str, Any] = {
    "CheckpointLoaderSimple": {"input": {"required": {"ckpt_name": [["base.safetensors", "sdxl\\turbo.safetensors"], {}]}}},
    "KSampler": {"input": {"required": {"sampler_name": [["euler", "dpmpp_2m"], {}], "seed": ["INT", {"default": 0}]}}},
    "LoraLoader": {"input": {"optional": {"lora_name": ["COMBO", {"options": ["style.safetensors"]}]}}},
    "LoadImage": {"input": {"required": {"image": [["a.png"], {"image_upload": True}]}}},
}


def test_prompt_the_worker_can_run_has_no_problem() -> None:
    prompt = {"1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "base.safetensors"}},
              "2": {"class_type": "KSampler", "inputs": {"sampler_name": "euler", "seed": 5, "model": ["1", 0]}}}

    assert review(prompt, OBJECT_INFO).problem() is None


def test_missing_model_file_is_named_with_its_node_and_input() -> None:
    prompt = {"1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "only-here.safetensors"}}}

    assert review(prompt, OBJECT_INFO).problem() == \
        "lacks model file(s): only-here.safetensors (CheckpointLoaderSimple.ckpt_name, node 1)"


def test_missing_file_in_a_combo_input_is_found() -> None:
    prompt = {"7": {"class_type": "LoraLoader", "inputs": {"lora_name": "other.safetensors"}}}

    assert "other.safetensors" in review(prompt, OBJECT_INFO).problem()


def test_missing_node_classes_are_named_once() -> None:
    prompt = {"1": {"class_type": "FancyNode", "inputs": {}}, "2": {"class_type": "FancyNode", "inputs": {}}}

    assert review(prompt, OBJECT_INFO).problem() == "lacks node class(es) FancyNode (install the custom nodes on the worker)"


def test_missing_plain_choice_is_not_called_a_file() -> None:
    prompt = {"2": {"class_type": "KSampler", "inputs": {"sampler_name": "new_sampler", "seed": 1}}}

    assert review(prompt, OBJECT_INFO).problem() == "does not offer sampler_name='new_sampler' (KSampler, node 2)"


def test_subfolder_file_is_respelled_for_a_windows_worker() -> None:
    prompt = {"1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "sdxl/turbo.safetensors"}}}
    result = review(prompt, OBJECT_INFO)

    assert result.problem() is None
    assert result.prompt["1"]["inputs"]["ckpt_name"] == "sdxl\\turbo.safetensors"
    assert prompt["1"]["inputs"]["ckpt_name"] == "sdxl/turbo.safetensors"


def test_upload_inputs_are_left_to_the_media_uploader() -> None:
    prompt = {"1": {"class_type": "LoadImage", "inputs": {"image": "not-on-worker.png"}}}

    assert review(prompt, OBJECT_INFO).problem() is None
