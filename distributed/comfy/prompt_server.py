"""What the master needs from ComfyUI's running server, read through one adapter.

ComfyUI keeps its queue and history on the `PromptServer`, and knows which node classes are output
nodes in its `nodes` module. The services get these as plain callables from here, so nothing else
reaches into ComfyUI's globals.
"""

from __future__ import annotations

import sys
from typing import Any

from .prompt_queue import ComfyPromptQueue


class ComfyServer:
    """ComfyUI's PromptServer, as the master's services see it."""

    def __init__(self, server: Any) -> None:
        self._server = server
        self.prompt_queue = ComfyPromptQueue(server)
        """Its prompt queue, as the distributed queue drives it."""

    @property
    def loop(self) -> Any:
        return self._server.loop

    @property
    def routes(self) -> Any:
        return self._server.routes

    @property
    def app(self) -> Any:
        return self._server.app

    def send(self, event: str, payload: dict[str, Any]) -> None:
        """Pushes an event to every browser (thread-safe: ComfyUI queues it for the loop)."""
        self._server.send_sync(event, payload)

    def add_on_prompt_handler(self, handler: Any) -> None:
        self._server.add_on_prompt_handler(handler)

    def add_middleware(self, middleware: Any) -> None:
        """Innermost of the app's middlewares: ComfyUI's own (origin checks) see each request first."""
        self._server.app.middlewares.append(middleware)

    def master_queue(self) -> tuple[list[str], list[str]]:
        """The master's running and pending prompt ids, pending in execution order."""
        return self.prompt_queue.view()

    def device(self) -> dict[str, str]:
        """What the master renders on, as workers report theirs in /system_stats: its torch device
        type ("cuda", "cpu", "mps" ...) and name."""
        import comfy.model_management

        device = comfy.model_management.get_torch_device()
        return {"type": str(getattr(device, "type", device)), "name": comfy.model_management.get_torch_device_name(device)}

    def prompt_ended(self, prompt_id: str) -> bool:
        """Whether the master's prompt is over (it is in the history)."""
        return bool(self._server.prompt_queue.get_history(prompt_id=prompt_id))


def is_output_node(class_type: str) -> bool:
    """Whether ComfyUI knows the class as an output node (its `nodes` module, loaded before us)."""
    node_class = sys.modules["nodes"].NODE_CLASS_MAPPINGS.get(class_type)
    return getattr(node_class, "OUTPUT_NODE", False) is True
