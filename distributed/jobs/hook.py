"""ComfyUI's on-prompt hook: every POST /prompt passes here before ComfyUI validates and queues it.

A prompt holding a collector is planned into a job and each collector is tagged with the job's id;
with the distributed queue on, a prompt without one is registered with the router and queued exactly
as sent. The hook does no network work: a job starts when the master begins executing its collector,
a routed prompt when a participant is free. Runs on the server loop, for every client of /prompt, so
API users are distributed too.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from typing import Any

from ..config.registry import Registry
from .dispatch import Dispatcher
from .plan import JOB_INPUT, has_collector, is_collector, slice_latents
from .routed import image_outputs
from .router import PromptRouter
from .upscale_plan import UPSCALE_CLASS

logger = logging.getLogger(__name__)


class PromptHook:
    """Tags prompts for the dispatcher, or routes them whole; `is_output_node` asks ComfyUI."""

    def __init__(self, registry: Registry, dispatcher: Dispatcher, router: PromptRouter,
                 is_output_node: Callable[[str], bool]) -> None:
        self._registry = registry
        self._dispatcher = dispatcher
        self._router = router
        self._is_output_node = is_output_node

    def __call__(self, json_data: dict[str, Any]) -> dict[str, Any]:
        """Plans prompts holding a collector and tags them with a job. The prompt id is fixed here
        (ComfyUI keeps one given in the request) so the job can name its prompt."""
        given = json_data.get("prompt_id")
        if given is not None and self._taken(str(given)):
            # Jobs and routed prompts are known by their prompt id: another prompt must not pass for one.
            logger.warning("A prompt came with the id %s of a distributed prompt already queued; it gets a new id", str(given)[:100])
            json_data["prompt_id"] = str(uuid.uuid4())
        prompt = json_data.get("prompt")
        if not isinstance(prompt, dict):
            return json_data
        if not has_collector(prompt):
            return self._route_whole(json_data, prompt)
        prompt_id = str(json_data.setdefault("prompt_id", str(uuid.uuid4())))
        job = self._dispatcher.register(prompt, prompt_id)
        for node in prompt.values():
            if is_collector(node) and isinstance(node.get("inputs"), dict):
                node["inputs"][JOB_INPUT] = job.job_id
        if job.plan is not None and job.master_batch is not None:
            slice_latents(prompt, job.plan.latent_nodes, job.master_batch)
        return json_data

    def _taken(self, prompt_id: str) -> bool:
        """Whether a distributed job or a routed prompt already stands for this prompt id."""
        return self._router.knows_prompt(prompt_id) or any(job.prompt_id == prompt_id for job in self._dispatcher.jobs())

    def _route_whole(self, json_data: dict[str, Any], prompt: dict[str, Any]) -> dict[str, Any]:
        """Distributed queue: the prompt is queued as sent; the router runs it where a GPU is free."""
        if not self._registry.snapshot().settings.distributed_queue:
            return json_data
        if any(isinstance(node, dict) and node.get("class_type") == UPSCALE_CLASS for node in prompt.values()):
            logger.info("Distributed queue: a prompt with a Distributed Upscale runs on the master, which hands its tiles out")
            return json_data
        outputs = image_outputs(prompt, self._is_output_node)
        if outputs is None:
            logger.info("Distributed queue: a prompt whose outputs are not all images runs on the master")
            return json_data
        self._router.register(str(json_data.setdefault("prompt_id", str(uuid.uuid4()))), outputs)
        return json_data
