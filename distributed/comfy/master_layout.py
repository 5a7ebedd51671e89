"""Where this ComfyUI lives and how it was started, as its local workers need to know it."""

from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass
from itertools import chain
from pathlib import Path

import folder_paths
from comfy.cli_args import args

from ..workers.local.command import MasterLayout
from ..workers.local.gpus import MasterDevice

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class MasterPaths:
    """This master's folders and port, read once from ComfyUI at start."""

    layout: MasterLayout
    user_dir: Path
    port: int
    input_dir: Path
    """The master's input folder: files its prompts load are uploaded to remote workers from here."""
    device: MasterDevice
    """How the master was started as far as its GPU goes: which GPU first-launch seeding leaves to it."""


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
        device=MasterDevice(
            visible_devices=os.environ.get("CUDA_VISIBLE_DEVICES"), device_order=os.environ.get("CUDA_DEVICE_ORDER"),
            cpu=bool(args.cpu), bus_id=None if args.cpu else torch_bus_id(),
        ),
    )


def torch_bus_id() -> str | None:
    """The PCI bus id of the CUDA device torch renders on in this process, if there is one.

    ComfyUI has set the device up by the time extensions load; anything short of a CUDA device
    (CPU, MPS, an old torch without the field) gives None.
    """
    try:
        import torch

        if not torch.cuda.is_available():
            return None
        return getattr(torch.cuda.get_device_properties(torch.cuda.current_device()), "pci_bus_id", None)
    except Exception as error:  # any failure to ask only means "unknown"; seeding then falls back
        logger.debug("Could not read the CUDA device's bus id: %s", error)
        return None
