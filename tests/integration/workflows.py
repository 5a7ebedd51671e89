"""API-format prompts used by the integration tests and benchmarks."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image


def seed_stamp_prompt(seed: int, batch_size: int = 1, width: int = 32, height: int = 16, sleep: float = 0.0,
                      prefix: str = "stamp") -> dict[str, Any]:
    """Seed -> image stamped with the seed -> (optional sleep) -> collector -> SaveImage."""
    prompt: dict[str, Any] = {
        "1": {"class_type": "DistributedSeed", "inputs": {"seed": seed}},
        "2": {"class_type": "DistTestSeedStamp", "inputs": {"seed": ["1", 0], "width": width, "height": height, "batch_size": batch_size}},
        "4": {"class_type": "DistributedCollector", "inputs": {"images": ["2", 0]}},
        "5": {"class_type": "SaveImage", "inputs": {"images": ["4", 0], "filename_prefix": prefix}},
    }
    if sleep:
        prompt["3"] = {"class_type": "DistTestSleep", "inputs": {"images": ["2", 0], "seconds": sleep, "steps": 4}}
        prompt["4"]["inputs"]["images"] = ["3", 0]
    return prompt


def tone_prompt(seed: int, samples: int = 4000, extra: int = 0, sample_rate: int = 16000) -> dict[str, Any]:
    """Seed -> audio stamped with the seed -> audio collector -> saved as .npy."""
    return {
        "1": {"class_type": "DistributedSeed", "inputs": {"seed": seed}},
        "2": {"class_type": "DistTestTone", "inputs": {"seed": ["1", 0], "samples": samples, "extra": extra, "sample_rate": sample_rate}},
        "3": {"class_type": "DistributedAudioCollector", "inputs": {"audio": ["2", 0]}},
        "4": {"class_type": "DistTestSaveAudioArray", "inputs": {"audio": ["3", 0], "filename_prefix": "tones"}},
    }


def read_tone_seed(clip: np.ndarray) -> int:
    """The seed DistTestTone stamped into one clip [channels, samples]."""
    return int.from_bytes(bytes(round(float(x) * 255) for x in clip[0, :8]), "big")


def noise_prompt(seed: int, size: int, batch_size: int = 1, prefix: str = "noise") -> dict[str, Any]:
    return {
        "1": {"class_type": "DistributedSeed", "inputs": {"seed": seed}},
        "2": {"class_type": "DistTestNoise", "inputs": {"seed": ["1", 0], "width": size, "height": size, "batch_size": batch_size}},
        "3": {"class_type": "DistributedCollector", "inputs": {"images": ["2", 0]}},
        "4": {"class_type": "SaveImage", "inputs": {"images": ["3", 0], "filename_prefix": prefix}},
    }


def saved_images(entry: dict[str, Any], output_dir: Path) -> list[Path]:
    """The files a finished prompt saved, in output order."""
    images = [image for output in entry["outputs"].values() for image in output.get("images", [])]
    return [output_dir / image["subfolder"] / image["filename"] for image in images if image["type"] == "output"]


def read_stamp(path: Path) -> tuple[int, int]:
    """(seed, index within its share's batch) from an image made by DistTestSeedStamp."""
    pixels = np.asarray(Image.open(path).convert("RGB"))
    seed = int.from_bytes(bytes(int(v) for v in pixels[0, :8, 0]), "big")
    return seed, int(pixels[0, 8, 1])


def error_message(entry: dict[str, Any]) -> str:
    for kind, data in entry["status"]["messages"]:
        if kind == "execution_error":
            return data.get("exception_message", "")
    return ""
