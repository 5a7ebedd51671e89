"""The extension's nodes, as ComfyUI registers them: Distributed Seed and Value, the Distributed
Collectors (images, audio), Save Image (Distributed), Distributed Upscale, and the internal nodes the
master adds itself (master shares).

Their implementations live in distributed/comfy/; they reach the server loop only through its bridge.
"""

from __future__ import annotations

from .distributed.comfy.collectors import (
    DistributedAudioCollector,
    DistributedCollector,
    DistributedMasterAudioShare,
    DistributedMasterShare,
)
from .distributed.comfy.save_image import DistributedSaveImage
from .distributed.comfy.seed import DistributedSeed
from .distributed.comfy.upscale import DistributedUpscale
from .distributed.comfy.value import DistributedValue

NODE_CLASS_MAPPINGS = {
    "DistributedSeed": DistributedSeed,
    "DistributedCollector": DistributedCollector,
    "DistributedAudioCollector": DistributedAudioCollector,
    "DistributedMasterShare": DistributedMasterShare,
    "DistributedMasterAudioShare": DistributedMasterAudioShare,
    "DistributedValue": DistributedValue,
    "DistributedSaveImage": DistributedSaveImage,
    "DistributedUpscale": DistributedUpscale,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "DistributedSeed": "Distributed Seed",
    "DistributedCollector": "Distributed Collector",
    "DistributedAudioCollector": "Distributed Audio Collector",
    "DistributedMasterShare": "Distributed Master Share",
    "DistributedMasterAudioShare": "Distributed Master Audio Share",
    "DistributedValue": "Distributed Value",
    "DistributedSaveImage": "Save Image (Distributed)",
    "DistributedUpscale": "Distributed Upscale",
}
