"""Which share runs where: shares wait on the master and are handed out only to a free participant.

Nothing is committed early to a participant's own queue beyond a small window (one share running,
one waiting), so a fast GPU never sits idle while a slow one has work queued. Which free participant
takes which share is decided by earliest expected finish (list scheduling on the speed model): a slow
participant is not given the last shares when a fast one would finish them sooner. Output order
never depends on who rendered what. A participant that failed a share is excluded from the rest of
the job (its failure is kept to name it in the error), and its share goes back to the line.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ..shares import Share, ShareState

WINDOW = 2
"""Shares a worker may hold: one running and one waiting in its ComfyUI queue, hiding the gap
between two shares (result download, next submit) without hoarding work."""


@dataclass(frozen=True)
class Participant:
    """A worker as the scheduler sees it at one moment."""

    id: str
    seconds_per_unit: float
    busy_until: float
    """When the shares it holds should be done (now, if it holds none)."""
    holding: int


class ShareQueue:
    """The shares of one job and who may still take them."""

    def __init__(self, shares: Sequence[Share]) -> None:
        self.shares = {share.index: share for share in shares}
        self.excluded: dict[str, str] = {}
        """participant id -> why it may not take more shares of this job ("worker 'x': cause")."""

    def pending(self) -> list[Share]:
        return sorted((s for s in self.shares.values() if s.state == ShareState.PENDING), key=lambda s: s.index)

    def held_by(self, participant: str) -> list[Share]:
        held = [s for s in self.shares.values() if s.state == ShareState.RUNNING and s.participant == participant]
        return sorted(held, key=lambda s: s.claimed_at or 0.0)

    def is_finished(self, but_for: str | None = None) -> bool:
        """Every share done; with `but_for`, shares that participant holds count as done too."""
        return all(s.state == ShareState.DONE or (s.state == ShareState.RUNNING and s.participant == but_for)
                   for s in self.shares.values())

    def claim(self, share: Share, participant: str, now: float) -> None:
        share.state = ShareState.RUNNING
        share.participant = participant
        share.claimed_at = now
        share.progress = None

    def complete(self, share: Share) -> None:
        share.state = ShareState.DONE
        share.progress = None

    def give_back(self, share: Share, participant: str, failure: str) -> None:
        """A failed attempt: the share waits again and the participant is excluded from this job.

        `failure` names the participant for people: "worker 'Box 2': connection refused".
        """
        share.attempts.append(failure)
        share.state = ShareState.PENDING
        share.participant = None
        share.claimed_at = None
        share.progress = None
        self.excluded[participant] = failure

    def fail_pending(self) -> list[Share]:
        """Marks every share that was not delivered as failed; returns them."""
        failed = [s for s in self.shares.values() if s.state != ShareState.DONE]
        for share in failed:
            share.state = ShareState.FAILED
        return failed


def assignments_now(pending: list[Share], participants: list[Participant], now: float, window: int = WINDOW) -> list[tuple[Share, str]]:
    """The shares to hand out now, by earliest expected finish over all pending shares.

    Every pending share is placed, in index order, on the participant that would finish it first
    (participants listed first win ties). A placement is handed out now if it fits in that
    participant's window. A share placed on a participant whose window is full goes now to one that
    has room and would finish it no later, so nobody idles for a share that gains nothing by waiting;
    the rest stays on the master, to be decided again when anything changes.
    """
    if not participants:
        return []
    order = {p.id: position for position, p in enumerate(participants)}
    speed = {p.id: p.seconds_per_unit for p in participants}
    start = {p.id: (now if p.holding == 0 else max(now, p.busy_until)) for p in participants}
    planned = dict(start)
    room = {p.id: window - p.holding for p in participants}
    placed_slots = dict(room)
    handed: list[tuple[Share, str]] = []
    deferred: list[tuple[Share, float]] = []
    for share in pending:
        best = min(participants, key=lambda p: (planned[p.id] + speed[p.id] * share.units, order[p.id])).id
        planned[best] += speed[best] * share.units
        placed_slots[best] -= 1
        if placed_slots[best] >= 0:
            handed.append((share, best))
            start[best] += speed[best] * share.units
            room[best] -= 1
        else:
            deferred.append((share, planned[best]))
    for share, planned_finish in deferred:
        open_now = [p for p in participants if room[p.id] > 0]
        if not open_now:
            break
        other = min(open_now, key=lambda p: (start[p.id] + speed[p.id] * share.units, order[p.id])).id
        if start[other] + speed[other] * share.units <= planned_finish + 1e-9:
            handed.append((share, other))
            start[other] += speed[other] * share.units
            room[other] -= 1
    return handed
