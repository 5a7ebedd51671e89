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
    import os
    from itertools import chain
    from pathlib import Path

    import folder_paths
    from comfy.cli_args import args
    from server import PromptServer

    from . import nodes
    from .distributed import fast_path
    from .distributed.app import DistributedApp, MasterPaths
    from .distributed.processes import WORKER_ID_ENV, MasterLayout
    from .distributed.routes import guard
    from .distributed.runtime import freeze_startup_heap

    # Master or worker alike, this instance can hand its share results to a master the fast way,
    # and ComfyUI's periodic full garbage collection should not stall it (see distributed/runtime.py).
    _results = fast_path.install(PromptServer.instance, guard)
    PromptServer.instance.app.on_startup.append(freeze_startup_heap)
    NODE_CLASS_MAPPINGS = {**nodes.NODE_CLASS_MAPPINGS, fast_path.SINK_CLASS: fast_path.sink_node(_results)}
    NODE_DISPLAY_NAME_MAPPINGS = {**nodes.NODE_DISPLAY_NAME_MAPPINGS, fast_path.SINK_CLASS: fast_path.SINK_DISPLAY_NAME}
    # A local worker loads the master's custom nodes too; there the extension must not act as a
    # master (no registry, no workers of its own): its nodes pass images through.
    if not os.environ.get(WORKER_ID_ENV):
        _application = DistributedApp(PromptServer.instance, MasterPaths(
            extension_dir=Path(__file__).resolve().parent,
            layout=MasterLayout(
                main_py=Path(sys.modules["__main__"].__file__).resolve(),
                base_directory=Path(folder_paths.base_path),
                extra_model_paths_configs=tuple(Path(p) for p in chain(*(args.extra_model_paths_config or []))),
                device_args=("--cpu",) if args.cpu else (),
            ),
            user_dir=Path(folder_paths.get_user_directory()),
            port=args.port,
            input_dir=Path(folder_paths.get_input_directory()),
        ))
        _application.install()
        nodes.bind(_application)

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS", "WEB_DIRECTORY"]
