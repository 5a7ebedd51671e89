"""The distributed queue's proxy node: it stands on the master for a prompt run whole where a GPU was free."""

from __future__ import annotations

import importlib
from typing import Any

import comfy.model_management
import torch

from ..errors import DistributedError
from .bridge import Interrupted, bound
from .collectors import interrupted
from .result_sink import comfy_prompt_id


class DistributedQueuedPrompt:
    """Queued by the master in place of the user's prompt (never added by hand). When the master's own
    turn comes and no worker has taken the prompt, it runs the original graph right here; otherwise
    it waits for the worker and saves the images as the prompt's own output nodes would. It serves
    only the prompt it was queued in: the router checks the prompt it executes in.
    """

    OUTPUT_NODE = True
    RETURN_TYPES = ()
    FUNCTION = "run"
    CATEGORY = "distributed"
    DESCRIPTION = "Added by the distributed queue for a prompt run on another GPU; not for use in workflows."

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"run_id": ("STRING", {"default": ""})}}

    def run(self, run_id: str) -> dict[str, Any]:
        bridge = bound()
        if bridge is None:
            raise RuntimeError("Distributed queue: this ComfyUI is not a distributed master")
        prompt_id = comfy_prompt_id()
        try:
            while True:
                graph = bridge.claim_routed(run_id, prompt_id, interrupted)
                if graph is not None:
                    return {"result": (), "expand": graph}
                result = bridge.wait_routed(run_id, prompt_id, interrupted)
                if result is not None:
                    break
        except Interrupted:
            raise comfy.model_management.InterruptProcessingException() from None
        except DistributedError as error:
            raise RuntimeError(f"Distributed queue: {error}") from None
        comfy_nodes = importlib.import_module("nodes")  # ComfyUI's own nodes module, not ours
        images = []
        for node_id in result.outputs:
            node = result.prompt[node_id]
            batch = torch.from_numpy(result.images[node_id])
            if node["class_type"] == "SaveImage":
                prefix = node["inputs"].get("filename_prefix", "ComfyUI")
                saved = comfy_nodes.SaveImage().save_images(batch, prefix, prompt=result.prompt)
            else:
                saved = comfy_nodes.PreviewImage().save_images(batch, prompt=result.prompt)
            images += saved["ui"]["images"]
        bridge.release_routed(run_id, prompt_id)
        return {"ui": {"images": images, "distributed_worker": [result.participant_name]}}
