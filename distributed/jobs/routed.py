"""One prompt of the distributed queue, and what ComfyUI's history and client get from it.

A routed prompt that a worker renders must look, to the master's history and to the client that
queued it, as if the master had rendered it: the same node ids, the same event names and payloads,
real timestamps. This module holds the run's record (it lives on the server loop) and builds those
values; the router decides who runs what (router.py), the comfy/ adapter hands them to ComfyUI.
"""

from __future__ import annotations

import asyncio
import enum
import time
from dataclasses import dataclass, field
from typing import Any

from .. import graph
from ..shares import ShareProgress, ShareWork

IMAGE_OUTPUTS = ("SaveImage", "PreviewImage")

StatusMessage = tuple[str, dict[str, Any]]
"""One entry of a history entry's status messages, as ComfyUI's executor records it: (event, data)."""


class RouteState(enum.StrEnum):
    WAITING = "waiting"
    """In the master's queue, or popped by the master's thread, which waits for a worker."""
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    INTERRUPTED = "interrupted"
    CANCELLED = "cancelled"
    """Deleted from the master's queue before anyone ran it."""


FINISHED = (RouteState.DONE, RouteState.FAILED, RouteState.INTERRUPTED, RouteState.CANCELLED)


@dataclass(frozen=True)
class QueuedPrompt:
    """A routed prompt as ComfyUI queued it: what a worker renders and what the saved images embed.

    `prompt` is ComfyUI's own queue item's graph (the user's prompt, exactly as queued); nothing here
    changes it.
    """

    prompt: graph.Prompt
    outputs_to_execute: tuple[str, ...]
    client_id: str | None = None
    extra_pnginfo: dict[str, Any] | None = None

    @classmethod
    def of(cls, prompt: graph.Prompt, outputs_to_execute: Any, extra_data: dict[str, Any]) -> QueuedPrompt:
        """From a ComfyUI queue item's parts: (number, id, prompt, extra_data, outputs_to_execute, sensitive)."""
        client_id = extra_data.get("client_id")
        extra_pnginfo = extra_data.get("extra_pnginfo")
        return cls(prompt, tuple(str(node_id) for node_id in outputs_to_execute or ()),
                   client_id if isinstance(client_id, str) else None, extra_pnginfo if isinstance(extra_pnginfo, dict) else None)


@dataclass(frozen=True)
class RoutedOutcome:
    """How a routed prompt ended, as ComfyUI's executor reports a prompt: what its history entry gets.

    Handed to ComfyUI's `PromptQueue.task_done`, or to the execution thread that waited for it; the
    loop never changes it after building it.
    """

    success: bool
    messages: tuple[StatusMessage, ...]
    outputs: dict[str, dict[str, Any]] = field(default_factory=dict)
    meta: dict[str, dict[str, Any]] = field(default_factory=dict)

    def history_result(self) -> dict[str, Any]:
        return {"outputs": self.outputs, "meta": self.meta}


def image_outputs(prompt: graph.Prompt, is_output_node: Any) -> tuple[str, ...] | None:
    """The prompt's output nodes if every one saves or previews images the master can save as it
    would (images from a link, a literal file name prefix), else None."""
    outputs = [node_id for node_id, node in prompt.items() if isinstance(node, dict) and is_output_node(str(node.get("class_type")))]
    if not outputs:
        return None
    for node_id in outputs:
        node = prompt[node_id]
        inputs = node.get("inputs")
        if node["class_type"] not in IMAGE_OUTPUTS or not isinstance(inputs, dict) or not graph.is_link(inputs.get("images")):
            return None
        if not isinstance(inputs.get("filename_prefix", ""), str):
            return None  # fed by another node: only the run itself would know the name
    return tuple(outputs)


def now_ms() -> int:
    """A status message's timestamp, as ComfyUI's executor stamps them."""
    return int(time.time() * 1000)


@dataclass
class RoutedPrompt:
    """One whole prompt of the distributed queue. Lives on the server loop."""

    prompt_id: str
    outputs: tuple[str, ...]
    """Its image output nodes (every output node of the prompt)."""
    registered_at: float = field(default_factory=time.monotonic)
    state: RouteState = RouteState.WAITING
    participant: str | None = None
    participant_name: str | None = None
    queued: QueuedPrompt | None = None
    """ComfyUI's queue item, from when it left the pending list (taken by the router or popped by the thread)
    until the prompt ends."""
    taken: bool = False
    """The router moved it into ComfyUI's running list: the router ends it there (task_done)."""
    held: bool = False
    """ComfyUI's execution thread popped it and waits for a worker: the thread ends it."""
    seen: bool = False
    """It was in the master's queue once (so leaving it unfinished means it was deleted)."""
    attempts: list[str] = field(default_factory=list)
    excluded: set[str] = field(default_factory=set)
    error: str | None = None
    progress: ShareProgress | None = None
    node: str | None = None
    """The node the worker runs now, as last relayed to the client."""
    step: tuple[int, int] = (0, 1)
    executed: list[str] = field(default_factory=list)
    """Nodes the worker finished, in order (for an interrupted or failed run's message)."""
    messages: list[StatusMessage] = field(default_factory=list)
    outcome: RoutedOutcome | None = None
    finished: asyncio.Event = field(default_factory=asyncio.Event)
    started_at: int | None = None
    finished_at: int | None = None

    @property
    def client_id(self) -> str | None:
        return self.queued.client_id if self.queued is not None else None

    def work_outputs(self) -> tuple[str, ...]:
        """The output nodes this run renders: ComfyUI may have been asked for only some of them."""
        wanted = set(self.queued.outputs_to_execute) if self.queued is not None else set()
        return tuple(node_id for node_id in self.outputs if not wanted or node_id in wanted)

    def worker_work(self) -> ShareWork:
        """The prompt as a worker gets it: only what the outputs need, the outputs made previews so the
        worker's output folder stays clean. Node ids are the user's own."""
        assert self.queued is not None
        outputs = self.work_outputs()
        prompt = graph.subgraph(self.queued.prompt, graph.ancestors(self.queued.prompt, outputs) | set(outputs))
        for node_id in outputs:
            prompt[node_id] = {"class_type": "PreviewImage", "inputs": {"images": prompt[node_id]["inputs"]["images"]}}
        return ShareWork(prompt, outputs)

    def node_type(self, node_id: str | None) -> str:
        node = self.queued.prompt.get(node_id) if self.queued is not None and node_id is not None else None
        return str(node.get("class_type")) if isinstance(node, dict) else ""

    def record(self, event: str, data: dict[str, Any]) -> dict[str, Any]:
        """Adds a status message, stamped now as ComfyUI's executor stamps them; returns its data."""
        stamped = {**data, "timestamp": now_ms()}
        self.messages.append((event, stamped))
        return stamped

    def last_node(self) -> str:
        """The node a failure or an interrupt is reported at: where the worker was, else the first output."""
        return self.node or (self.executed[-1] if self.executed else self.outputs[0])

    def snapshot(self) -> dict[str, Any]:
        return {
            "prompt_id": self.prompt_id,
            "state": self.state.value,
            "participant": self.participant,
            "participant_name": self.participant_name,
            "outputs": list(self.outputs),
            "attempts": list(self.attempts),
            "error": self.error,
            "progress": self.progress.as_json() if self.progress is not None else None,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
        }
