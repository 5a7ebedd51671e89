"""The master's own share, as the panel sees it: ComfyUI's progress on the master, whoever queued the prompt.

ComfyUI sends node and step progress only to the client that queued a prompt, so a prompt queued
through the API shows "Master · Running" with no steps in every other browser. While a collector's
job runs, this handler, registered in ComfyUI's progress registry for the prompt, passes the
master's progress on to the job, counted like a worker's: nodes done, and steps of the running one.
"""

from __future__ import annotations

from collections.abc import Collection

from comfy_execution.progress import ProgressHandler, add_progress_handler

from ..shares import NodeCount
from .bridge import JobBridge

HANDLER_NAME = "distributed-master-share"


class MasterShareProgress(ProgressHandler):
    """Forwards the progress of the master's share nodes to its job (on the execution thread, never waiting)."""

    def __init__(self, bridge: JobBridge, job_id: str, share_nodes: Collection[str]) -> None:
        super().__init__(HANDLER_NAME)
        self._bridge = bridge
        self._job_id = job_id
        self._nodes = frozenset(share_nodes)
        self._count = NodeCount(self._nodes)

    def start_handler(self, node_id, state, prompt_id) -> None:  # type: ignore[no-untyped-def]
        if str(node_id) in self._nodes:
            self._bridge.master_progress(self._job_id, self._count.started(str(node_id)))

    def update_handler(self, node_id, value, max_value, state, prompt_id, image=None) -> None:  # type: ignore[no-untyped-def]
        if str(node_id) in self._nodes:
            self._bridge.master_progress(self._job_id, self._count.stepped(str(node_id), value, max_value))

    def finish_handler(self, node_id, state, prompt_id) -> None:  # type: ignore[no-untyped-def]
        if str(node_id) in self._nodes:
            self._bridge.master_progress(self._job_id, self._count.finished(str(node_id)))


def follow_master_share(bridge: JobBridge, job_id: str, share_nodes: Collection[str]) -> None:
    """Registers the handler for the prompt ComfyUI is running now (its registry is new for every prompt)."""
    add_progress_handler(MasterShareProgress(bridge, job_id, share_nodes))
