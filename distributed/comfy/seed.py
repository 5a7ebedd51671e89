"""The Distributed Seed node: one seed per share."""

from __future__ import annotations

from typing import Any

from ..jobs.plan import SEED_SPACE


class DistributedSeed:
    """A seed that differs per share: the master's share uses it as is, share k uses seed + k."""

    DESCRIPTION = "Seed for distributed runs: each participant renders with its own seed derived from this one."
    RETURN_TYPES = ("INT",)
    RETURN_NAMES = ("seed",)
    FUNCTION = "seed"
    CATEGORY = "distributed"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"seed": ("INT", {"default": 0, "min": 0, "max": SEED_SPACE - 1, "control_after_generate": True})}}

    def seed(self, seed: int) -> tuple[int]:
        return (seed,)
