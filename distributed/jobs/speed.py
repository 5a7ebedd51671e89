"""How fast each participant renders each kind of work, learned from real runs.

One moving estimate of seconds per unit (a share, or an image in split mode) per participant and
per workflow key (the share's graph without its seeds), so a GPU that is fast at one workflow and
slow at another is judged on the work at hand. Before a participant's first run its estimate is the
middle of what the others showed, and ties go to the participant listed first.
"""

from __future__ import annotations

import statistics
from collections import defaultdict

SMOOTHING = 0.3
"""Weight of the newest observation: recent runs count most, one odd run does not swing it."""


class SpeedModel:
    def __init__(self) -> None:
        self._seconds: dict[str, dict[str, float]] = defaultdict(dict)
        self._latest_key: str | None = None

    def observe(self, workflow_key: str, participant: str, seconds: float, units: int = 1) -> None:
        self._latest_key = workflow_key
        per_unit = max(seconds, 1e-3) / max(units, 1)
        known = self._seconds[workflow_key].get(participant)
        self._seconds[workflow_key][participant] = per_unit if known is None else known + SMOOTHING * (per_unit - known)

    def estimates(self, workflow_key: str, participants: list[str]) -> dict[str, float]:
        """Seconds per unit for each participant; unknown ones get the median of the known."""
        known = self._seconds.get(workflow_key, {})
        values = [known[p] for p in participants if p in known] or list(known.values())
        fallback = statistics.median(values) if values else 1.0
        return {p: known.get(p, fallback) for p in participants}

    def latest_relative_speed(self, participant: str) -> float | None:
        """The participant's relative speed at the workflow run last, if it took part in it."""
        known = self._seconds.get(self._latest_key or "", {})
        if participant not in known:
            return None
        return round(min(known.values()) / known[participant], 3)

    def snapshot(self) -> dict[str, dict[str, dict[str, float]]]:
        return {
            key: {p: {"seconds_per_unit": round(s, 4), "relative_speed": round(min(per.values()) / s, 3)} for p, s in per.items()}
            for key, per in self._seconds.items()
        }
