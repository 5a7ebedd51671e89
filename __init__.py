"""ComfyUI Distributed GPU: one ComfyUI drives every GPU you can reach.

ComfyUI imports this package from custom_nodes/ after starting its server; the package then builds
the application around the running PromptServer and exports the nodes and the web folder for the
sidebar panel. Imported anywhere else (test collection, tooling), it does nothing.
"""

from __future__ import annotations

import sys

WEB_DIRECTORY = "./web"
NODE_CLASS_MAPPINGS: dict = {}
NODE_DISPLAY_NAME_MAPPINGS: dict = {}

if "server" in sys.modules and hasattr(sys.modules["server"], "PromptServer"):
    from .distributed.comfy.startup import start

    NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS = start(sys.modules["server"].PromptServer.instance)

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS", "WEB_DIRECTORY"]
