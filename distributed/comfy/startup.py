"""What the package does when ComfyUI loads it: on every instance, the result sink and its route;
on a master, the whole application.

A local worker loads the master's custom nodes too; there the extension must not act as a master
(no registry, no workers of its own): its collectors pass images through.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from comfy.cli_args import parser as comfy_parser

from ... import nodes
from ..api.access import guard
from ..api.identity import add_identity_route
from ..app import DistributedApp
from ..workers.local.command import WORKER_ID_ENV
from . import bridge, result_sink
from .master_layout import read_master_paths
from .process_tweaks import freeze_startup_heap
from .prompt_server import ComfyServer

EXTENSION_DIR = Path(__file__).resolve().parents[2]


def start(server: Any) -> tuple[dict[str, type], dict[str, str]]:
    """Installs the extension into ComfyUI's running server; returns the node mappings to export."""
    # Master or worker alike, this instance can hand its share results to a master the fast way,
    # and ComfyUI's periodic full garbage collection should not stall it (see process_tweaks.py).
    store = result_sink.install(server, guard)
    server.app.on_startup.append(freeze_startup_heap)
    classes = {**nodes.NODE_CLASS_MAPPINGS, result_sink.SINK_CLASS: result_sink.sink_node(store)}
    names = {**nodes.NODE_DISPLAY_NAME_MAPPINGS, result_sink.SINK_CLASS: result_sink.SINK_DISPLAY_NAME}
    if not os.environ.get(WORKER_ID_ENV):
        application = DistributedApp(ComfyServer(server), read_master_paths(), comfy_parser, EXTENSION_DIR)
        application.install()
        bridge.bind(application.bridge)
    else:
        add_identity_route(server.routes, None)  # a worker: a master probing it learns it is not itself
    return classes, names
