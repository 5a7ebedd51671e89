"""API-format prompts that name model files, for the model inventory, copy and set-up tests.

Nothing loads these models: the tests check them against the workers' loader option lists only.
"""

from __future__ import annotations

from typing import Any


def loader_prompt(checkpoint: str, lora: str | None = None, test_node: bool = False) -> dict[str, Any]:
    """A collector workflow that names a checkpoint (and a LoRA) upstream of the collector; with
    `test_node`, the decoded image passes a node of the test node pack on its way."""
    prompt: dict[str, Any] = {
        "1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": checkpoint}},
        "2": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "3": {"class_type": "VAEDecode", "inputs": {"samples": ["2", 0], "vae": ["1", 2]}},
        "4": {"class_type": "DistributedCollector", "inputs": {"images": ["3", 0]}},
        "5": {"class_type": "SaveImage", "inputs": {"images": ["4", 0], "filename_prefix": "models"}},
    }
    if lora is not None:  # checkpoint -> LoRA -> sampler -> decode -> collector
        prompt["6"] = {"class_type": "LoraLoader", "inputs": {"model": ["1", 0], "clip": ["1", 1], "lora_name": lora,
                                                           "strength_model": 1.0, "strength_clip": 1.0}}
        prompt["7"] = {"class_type": "CLIPTextEncode", "inputs": {"clip": ["6", 1], "text": "x"}}
        prompt["8"] = {"class_type": "KSampler", "inputs": {
            "model": ["6", 0], "positive": ["7", 0], "negative": ["7", 0], "latent_image": ["2", 0], "seed": 1, "steps": 1,
            "cfg": 1.0, "sampler_name": "euler", "scheduler": "normal", "denoise": 1.0}}
        prompt["3"]["inputs"]["samples"] = ["8", 0]
    if test_node:
        prompt["9"] = {"class_type": "DistTestSleep", "inputs": {"images": ["3", 0], "seconds": 0.0, "steps": 1}}
        prompt["4"]["inputs"]["images"] = ["9", 0]
    return prompt
