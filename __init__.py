"""ComfyUI Distributed GPU: one ComfyUI drives every GPU you can reach.

ComfyUI imports this package from custom_nodes/. It builds the application around the running
PromptServer and exports the nodes and the web folder for the sidebar panel.
"""

from __future__ import annotations

from pathlib import Path

from server import PromptServer

from . import nodes
from .distributed.app import DistributedApp
from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS

WEB_DIRECTORY = "./web"

_application = DistributedApp(PromptServer.instance, Path(__file__).resolve().parent)
_application.install()
nodes.bind(_application)

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS", "WEB_DIRECTORY"]
