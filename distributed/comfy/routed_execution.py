"""ComfyUI's executor, for the distributed queue's prompts that the master does not render itself.

ComfyUI's execution thread pops every queued prompt, routed or not. When the master takes part, it
renders a routed prompt like any other. When it only orchestrates, the thread hands the prompt to the
router and waits, in short slices that notice an interrupt, while a worker renders it; then it
reports the prompt as its executor would have (`history_result`, `success`, `status_messages`), and
ComfyUI's prompt worker ends it in the history as usual. An interrupt stops the prompt on its worker.

The wrap is put around `PromptExecutor.execute` once, at start-up; every prompt the router does not
hold goes to ComfyUI's own executor untouched.
"""

from __future__ import annotations

import functools
from typing import Any

import comfy.model_management
import execution

from ..jobs.routed import QueuedPrompt
from .bridge import Interrupted, JobBridge, bound
from .collectors import interrupted

WRAPPED = "_distributed_queue"


def wrap_executor() -> None:
    """Routes `PromptExecutor.execute` through `execute_elsewhere` first (once, however often called)."""
    original = execution.PromptExecutor.execute
    if getattr(original, WRAPPED, False):
        return

    @functools.wraps(original)
    def execute(self: Any, prompt: dict, prompt_id: str, extra_data: dict | None = None, execute_outputs: list | None = None) -> None:
        bridge = bound()
        if bridge is None or not execute_elsewhere(bridge, self, prompt, prompt_id, extra_data or {}, execute_outputs or []):
            original(self, prompt, prompt_id, {} if extra_data is None else extra_data, [] if execute_outputs is None else execute_outputs)

    setattr(execute, WRAPPED, True)
    execution.PromptExecutor.execute = execute


def execute_elsewhere(bridge: JobBridge, executor: Any, prompt: dict, prompt_id: str, extra_data: dict,
                      execute_outputs: list) -> bool:
    """False when the master renders the prompt itself; True once a worker rendered it and `executor`
    holds what ComfyUI's prompt worker reads after an execution."""
    comfy.model_management.interrupt_current_processing(False)  # as the executor does first: an older interrupt is not this prompt's
    queued = QueuedPrompt.of(prompt, execute_outputs, extra_data)
    try:
        outcome = bridge.hold_routed(prompt_id, queued, interrupted)
    except Interrupted:
        outcome = bridge.routed_interrupted(prompt_id)
    if outcome is None:
        return False
    executor.server.client_id = queued.client_id  # where the prompt worker sends the final `executing`
    executor.status_messages = list(outcome.messages)
    executor.success = outcome.success
    executor.history_result = outcome.history_result()
    return True
