"""Where this ComfyUI lives and how it was started, as its local workers need to know it."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from itertools import chain
from pathlib import Path

import folder_paths
from comfy.cli_args import args

from ..workers.local.command import MasterLayout


@dataclass(frozen=True)
class MasterPaths:
    """This master's folders and port, read once from ComfyUI at start."""

    layout: MasterLayout
    user_dir: Path
    port: int
    input_dir: Path
    """The master's input folder: files its prompts load are uploaded to remote workers from here."""


def read_master_paths() -> MasterPaths:
    """What ComfyUI's folder_paths and command line say about this instance."""
    return MasterPaths(
        layout=MasterLayout(
            main_py=Path(sys.modules["__main__"].__file__).resolve(),
            base_directory=Path(folder_paths.base_path),
            extra_model_paths_configs=tuple(Path(p) for p in chain(*(args.extra_model_paths_config or []))),
            device_args=("--cpu",) if args.cpu else (),
        ),
        user_dir=Path(folder_paths.get_user_directory()),
        port=args.port,
        input_dir=Path(folder_paths.get_input_directory()),
    )
