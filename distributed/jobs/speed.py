"""How fast each participant renders each kind of work, learned from real runs.

One estimate of seconds per unit (a share, or an image in split mode) per participant and per
workflow key (the share's graph without its seeds), so a GPU that is fast at one workflow and slow at
another is judged on the work at hand. The estimate is the median of the participant's last few warm
runs, so one odd run does not swing it. Four rules keep a participant that was measured badly once
from being starved of work for good, since a participant given no work is never measured again:

- **Cold runs only bound.** A run that loaded its models (the participant's first of the workflow,
  or a worker that reused nothing from its cache) says how long the work takes *at most*: it may
  lower an estimate, never set or raise it.
- **Uncertain estimates are optimistic.** An estimate backed by fewer than two warm runs (their
  weight faded below `CERTAIN_WEIGHT`), or whose last two warm runs disagree by more than
  `AGREEMENT`, counts as fast as the fastest figure anyone showed for the workflow, so the
  participant gets work and is measured.
- **Estimates fade.** The weight of each warm run halves every `HALF_LIFE_SECONDS`; a GPU that was
  busy with something else yesterday is uncertain again today, and measured anew.
- **A lagging copy counts.** A run stopped because another copy finished first took at least as long
  as it ran: an estimate below that takes it as a warm run.
"""

from __future__ import annotations

import statistics
import time
from collections import deque
from dataclasses import dataclass, field

from .contracts import Clock

RECENT_RUNS = 5
"""Warm runs the estimate is the median of."""
CERTAIN_WEIGHT = 1.5
"""Two warm runs, faded by less than a quarter (under 25 minutes old), make an estimate certain."""
AGREEMENT = 2.0
"""The last two warm runs must agree within this factor for the estimate to be certain."""
HALF_LIFE_SECONDS = 3600.0
UNMEASURED_SECONDS = 1.0
"""The estimate of a workflow nobody has run yet: every participant alike."""


@dataclass
class _Record:
    """What is known of one participant at one workflow."""

    warm: deque[tuple[float, float]] = field(default_factory=lambda: deque(maxlen=RECENT_RUNS))
    """(seconds per unit, when) of its last warm runs."""
    bound: float | None = None
    """The fastest cold run, seconds per unit: an upper bound on the warm figure."""
    runs: int = 0
    """Runs seen, warm or cold: the first run of a workflow on a participant is cold."""
    latest: tuple[float, float] | None = None
    """(seconds per unit, when) of its latest warm run, or of a run stopped after that long."""

    @property
    def seconds(self) -> float | None:
        """The warm estimate, seconds per unit: the median of the recent warm runs, at most the bound."""
        if not self.warm:
            return None
        median = statistics.median(value for value, _ in self.warm)
        return median if self.bound is None else min(median, self.bound)

    def weight_at(self, now: float) -> float:
        return sum(0.5 ** (max(now - when, 0.0) / HALF_LIFE_SECONDS) for _, when in self.warm)

    def agrees(self) -> bool:
        if len(self.warm) < 2:
            return False
        (last, _), (before, _) = self.warm[-1], self.warm[-2]
        return max(last, before) <= AGREEMENT * min(last, before)

    def best(self) -> float | None:
        """The lowest figure this record holds."""
        figures = [value for value in (self.seconds, self.bound) if value is not None]
        return min(figures) if figures else None


class SpeedModel:
    def __init__(self, clock: Clock = time.monotonic) -> None:
        self._clock = clock
        self._records: dict[str, dict[str, _Record]] = {}
        self._latest_key: str | None = None

    def has_run(self, workflow_key: str, participant: str) -> bool:
        """Whether the participant has run this workflow before (so its next run may be warm)."""
        record = self._records.get(workflow_key, {}).get(participant)
        return record is not None and record.runs > 0

    def has_basis(self, workflow_key: str) -> bool:
        """Whether anyone has run the workflow: estimates then rest on a measurement, not a guess."""
        return any(record.best() is not None for record in self._records.get(workflow_key, {}).values())

    def first_run_seconds(self, workflow_key: str) -> float | None:
        """What a participant's first run of the workflow may take: the median of the first (cold)
        runs seen, or None before any."""
        bounds = [record.bound for record in self._records.get(workflow_key, {}).values() if record.bound is not None]
        return statistics.median(bounds) if bounds else None

    def observe(self, workflow_key: str, participant: str, seconds: float, units: int = 1, warm: bool = True) -> None:
        """One run of `units` that took `seconds`; a cold run only bounds the estimate."""
        self._latest_key = workflow_key
        per_unit = max(seconds, 1e-3) / max(units, 1)
        record = self._record(workflow_key, participant)
        record.runs += 1
        if warm:
            record.warm.append((per_unit, self._clock()))
            record.latest = (per_unit, self._clock())
        else:
            record.bound = per_unit if record.bound is None else min(record.bound, per_unit)

    def observe_at_least(self, workflow_key: str, participant: str, seconds: float, units: int = 1) -> None:
        """A run stopped after `seconds` (another copy finished first, or it stalled): it would have
        taken longer."""
        record = self._record(workflow_key, participant)
        per_unit = max(seconds, 1e-3) / max(units, 1)
        if record.seconds is None or record.seconds < per_unit:
            self.observe(workflow_key, participant, seconds, units, warm=True)
        record.latest = (per_unit, self._clock())

    def usual_seconds(self, workflow_key: str, participant: str) -> float | None:
        """The participant's own warm figure (certain or not), seconds per unit, or None before its
        first warm run: what is usual for it, whatever the scheduler assumes while measuring it."""
        record = self._records.get(workflow_key, {}).get(participant)
        return record.seconds if record is not None else None

    def latest_seconds(self, workflow_key: str, participant: str) -> float | None:
        """Seconds per unit of the participant's latest warm run (or of one stopped after that long)
        in the last `HALF_LIFE_SECONDS`: what it shows now, beside its estimate."""
        record = self._records.get(workflow_key, {}).get(participant)
        if record is None or record.latest is None or self._clock() - record.latest[1] > HALF_LIFE_SECONDS:
            return None
        return record.latest[0]

    def is_certain(self, workflow_key: str, participant: str) -> bool:
        record = self._records.get(workflow_key, {}).get(participant)
        return record is not None and record.agrees() and record.weight_at(self._clock()) >= CERTAIN_WEIGHT

    def estimates(self, workflow_key: str, participants: list[str]) -> dict[str, float]:
        """Seconds per unit for each participant; an uncertain one gets the fastest figure known."""
        records = self._records.get(workflow_key, {})
        figures = [figure for record in records.values() if (figure := record.best()) is not None]
        optimistic = min(figures) if figures else UNMEASURED_SECONDS
        result = {}
        for participant in participants:
            record = records.get(participant)
            if record is not None and record.seconds is not None and self.is_certain(workflow_key, participant):
                result[participant] = record.seconds
            else:
                result[participant] = optimistic
        return result

    def latest_relative_speed(self, participant: str) -> float | None:
        """The participant's speed at the workflow run last, relative to the fastest certain one;
        None while its own estimate is uncertain (it is being measured)."""
        key = self._latest_key or ""
        if not self.is_certain(key, participant):
            return None
        certain = [r.seconds for p, r in self._records[key].items() if r.seconds is not None and self.is_certain(key, p)]
        return round(min(certain) / self._records[key][participant].seconds, 3)  # type: ignore[operator]

    def snapshot(self) -> dict[str, dict[str, dict[str, float | bool | None]]]:
        """Per workflow and participant: the estimate in force, whether it is certain, the cold bound."""
        view: dict[str, dict[str, dict[str, float | bool | None]]] = {}
        for key, records in self._records.items():
            seconds = self.estimates(key, list(records))
            fastest = min(seconds.values(), default=1.0)
            view[key] = {
                participant: {
                    "seconds_per_unit": round(seconds[participant], 4),
                    "relative_speed": round(fastest / seconds[participant], 3),
                    "certain": self.is_certain(key, participant),
                    "warm_samples": round(record.weight_at(self._clock()), 2),
                    "cold_bound": round(record.bound, 4) if record.bound is not None else None,
                }
                for participant, record in records.items()
            }
        return view

    def _record(self, workflow_key: str, participant: str) -> _Record:
        return self._records.setdefault(workflow_key, {}).setdefault(participant, _Record())
