"""What the package does when ComfyUI loads it: on every instance, the result sink and its route;
on a master, the whole application.

A local worker loads the master's custom nodes too; there the extension must not act as a master
(no registry, no workers of its own): its collectors pass images through.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from comfy.cli_args import args as comfy_args
from comfy.cli_args import parser as comfy_parser

from ... import nodes
from ..api.access import AccessPolicy
from ..api.identity import add_identity_route
from ..app import DistributedApp
from ..transport.input_images import INPUT_CLASS, INPUT_DISPLAY_NAME
from ..workers.local.command import WORKER_ID_ENV
from ..workers.lock import WORKER_TOKEN_ENV, worker_guard, worker_token
from . import bridge, image_input, model_folders, result_sink, routed_execution
from .master_layout import read_master_paths
from .process_tweaks import freeze_startup_heap
from .prompt_server import ComfyServer

logger = logging.getLogger(__name__)

EXTENSION_DIR = Path(__file__).resolve().parents[2]


def start(server: Any) -> tuple[dict[str, type], dict[str, str]]:
    """Installs the extension into ComfyUI's running server; returns the node mappings to export."""
    token = worker_token(os.environ)
    if token is not None:
        # First of all middlewares, before ComfyUI's own: a request without the token learns nothing.
        server.app.middlewares.insert(0, worker_guard(token))
        logger.info("%s is set: this ComfyUI answers only requests that carry it", WORKER_TOKEN_ENV)
    # Master or worker alike, this instance can hand its share results to a master the fast way,
    # and ComfyUI's periodic full garbage collection should not stall it (see process_tweaks.py).
    # The results route takes this instance's API token, as the master's routes do.
    # It also takes upscale tiles without a PNG (image_input), under the same policy.
    guard = AccessPolicy.for_results(os.environ).guard
    store = result_sink.install(server, guard)
    inputs = image_input.install(server, guard)
    local_models = model_folders.install(server)  # any instance may receive models from a master
    server.app.on_startup.append(freeze_startup_heap)
    classes = {**nodes.NODE_CLASS_MAPPINGS, result_sink.SINK_CLASS: result_sink.sink_node(store),
               INPUT_CLASS: image_input.input_node(inputs)}
    names = {**nodes.NODE_DISPLAY_NAME_MAPPINGS, result_sink.SINK_CLASS: result_sink.SINK_DISPLAY_NAME,
             INPUT_CLASS: INPUT_DISPLAY_NAME}
    if not os.environ.get(WORKER_ID_ENV):
        application = DistributedApp(ComfyServer(server), read_master_paths(), comfy_parser, EXTENSION_DIR, local_models=local_models,
                                     cors_enabled=comfy_args.enable_cors_header is not None)
        application.install()
        bridge.bind(application.bridge)
        routed_execution.wrap_executor()
    else:
        add_identity_route(server.routes, None)  # a worker: a master probing it learns it is not itself
    return classes, names
