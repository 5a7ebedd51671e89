"""Which share runs where: shares wait on the master and are handed out only to a free participant.

Workers pull: a participant that frees up takes the lowest pending share, so a fast worker is never
idle while a slow one still has work queued, and output order never depends on who finished first.
A participant that failed a share is excluded from the rest of the job (its failure is kept to name
it in the error), and its share goes back to the front of the line.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field


class ShareState(str, enum.Enum):
    PENDING = "pending"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"


@dataclass
class Share:
    """One unit of a job, rendered by exactly one participant in the end."""

    index: int
    state: ShareState = ShareState.PENDING
    participant: str | None = None
    attempts: list[str] = field(default_factory=list)
    """One line per failed attempt: "worker 'x': cause"."""
    progress: dict | None = None


class ShareQueue:
    """Pending shares of one job and who may still take them."""

    def __init__(self, share_indexes: list[int]) -> None:
        self.shares = {index: Share(index) for index in share_indexes}
        self.excluded: dict[str, str] = {}
        """participant id -> why it may not take more shares of this job ("worker 'x': cause")."""

    def pending(self) -> list[Share]:
        return sorted((s for s in self.shares.values() if s.state == ShareState.PENDING), key=lambda s: s.index)

    def running(self) -> list[Share]:
        return [s for s in self.shares.values() if s.state == ShareState.RUNNING]

    def is_finished(self) -> bool:
        return all(s.state == ShareState.DONE for s in self.shares.values())

    def may_take(self, participant: str) -> bool:
        return participant not in self.excluded and not any(s.participant == participant for s in self.running())

    def claim(self, participant: str) -> Share | None:
        """The lowest pending share for a free participant, marked running; None if nothing fits."""
        if not self.may_take(participant):
            return None
        pending = self.pending()
        if not pending:
            return None
        share = pending[0]
        share.state = ShareState.RUNNING
        share.participant = participant
        share.progress = None
        return share

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
        share.progress = None
        self.excluded[participant] = failure

    def fail_pending(self) -> list[Share]:
        """Marks every share that was not delivered as failed; returns them."""
        failed = [s for s in self.shares.values() if s.state != ShareState.DONE]
        for share in failed:
            share.state = ShareState.FAILED
        return failed
