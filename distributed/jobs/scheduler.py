"""Which share runs where: shares wait on the master and are handed out only to a free participant.

Nothing is committed early to a participant's own queue beyond a small window (one share running,
one waiting), so a fast GPU never sits idle while a slow one has work queued. Which free participant
takes which share is decided by earliest expected finish (list scheduling on the speed model): a slow
participant is not given the last shares when a fast one would finish them sooner. Output order
never depends on who rendered what. A participant that failed a share is excluded from the rest of
the job (its failure is kept to name it in the error), and its shares go back to the line.

A participant whose current share runs past what its speed predicted, or whose last share took far
longer, is judged by what it shows: at least that slow (`participant_view`). When it lags
`backup_after` times behind, it keeps only the share it runs: those still waiting in its own queue go
back to the line (`withdrawals_now`), and it gets the next one only once it has delivered. An idle
participant that would finish its running share sooner starts a copy of it (`backups_now`), the
"backup task" of MapReduce: the first copy delivered wins, the other is stopped and dropped.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from ..shares import RunState, Share, ShareRun, ShareState

WINDOW = 2
"""Shares a worker may hold: one running and one waiting in its ComfyUI queue, hiding the gap
between two shares (result download, next submit) without hoarding work."""
LAG_FLOOR_SECONDS = 2.0
"""A participant lags only when it is this much later than usual too: the few hundred milliseconds
of a short share's fetch or a stock worker's garbage-collection pause are no lag."""


@dataclass(frozen=True)
class Participant:
    """A participant as the scheduler sees it at one moment."""

    id: str
    seconds_per_unit: float
    """What each unit is expected to take now: its estimate, or what it shows while it lags."""
    busy_until: float
    """When the shares it holds should be done (now, if it holds none)."""
    holding: int
    window: int = WINDOW
    lag: float = 0.0
    """How many times slower than usual it shows itself (its current share, or its latest run); 0
    when it does not lag."""
    finishes: tuple[tuple[int, float], ...] = ()
    """(share index, expected finish) of each share it holds, in the order it runs them."""

    @property
    def room(self) -> int:
        return self.window - self.holding


def participant_view(participant: str, seconds_per_unit: float, held: Sequence[tuple[int, ShareRun, int]], free_since: float,
                     now: float, window: int = WINDOW, has_basis: bool = True, current_seconds_per_unit: float | None = None,
                     usual_seconds_per_unit: float | None = None, latest_seconds_per_unit: float | None = None) -> Participant:
    """The participant as the scheduler sees it, from what it holds: (share index, run, units) in claim order.

    Shares are placed on it at `seconds_per_unit` (its estimate, optimistic while uncertain). Its
    current share started when its worker said so, else when it was handed out or the share before
    it was delivered (`free_since`), whichever came last; past its expected time, the share is guessed
    to need as long again as it has overrun; once its worker has run it, only the fetch is left. It
    *lags* when it shows itself much slower than usual (`usual_seconds_per_unit`, its own warm runs;
    else its estimate): its latest run (`latest_seconds_per_unit`) took that long, or its current
    share has run that long; for a first run of a workflow, judged against other first runs
    (`current_seconds_per_unit`). An overrun under
    LAG_FLOOR_SECONDS is no lag, nor an overrun of a guess (`has_basis` False: nobody has run the
    workflow). A lagging participant counts as that slow for everything it holds or would get.
    """
    usual = usual_seconds_per_unit or seconds_per_unit
    speed, lag = seconds_per_unit, 0.0
    latest = latest_seconds_per_unit
    if latest is not None and latest - usual >= LAG_FLOOR_SECONDS:
        lag, speed = latest / usual, max(speed, latest)
    busy = now
    finishes: list[tuple[int, float]] = []
    if held:
        index, run, units = held[0]
        began = run.started_at if run.started_at is not None else max(run.claimed_at, free_since)
        elapsed = run.ran_seconds if run.ran_seconds is not None else max(now - began, 0.0)
        started = run.started_at is not None and has_basis
        expected = (current_seconds_per_unit or speed) * units
        if run.ran_seconds is not None:
            busy = now  # it has run; only its outputs are on their way
        else:
            busy = now + (elapsed - expected) if started and elapsed > expected else max(now, began + expected)
        reference = (current_seconds_per_unit or usual) * units
        if started and elapsed - reference >= LAG_FLOOR_SECONDS:
            lag = max(lag, elapsed / reference)
            speed = max(speed, elapsed / units)
        finishes.append((index, busy))
        for index, _, units in held[1:]:
            busy += speed * units
            finishes.append((index, busy))
    return Participant(participant, speed, busy, len(held), window, lag, tuple(finishes))


def assignments_now(pending: list[Share], participants: list[Participant], now: float) -> list[tuple[Share, str]]:
    """The shares to hand out now, by earliest expected finish over all pending shares.

    A share dealt to a participant (fan-out) goes to it when it is among `participants`, and waits for
    its room. Every other pending share is placed, in index order, on the participant that would
    finish it first (participants listed first win ties). A placement is handed out now if it fits in
    that participant's window. A share placed on a participant whose window is full goes now to one
    that has room and would finish it no later, so nobody idles for a share that gains nothing by
    waiting; the rest stays on the master, to be decided again when anything changes.
    """
    if not pending or not any(p.room > 0 for p in participants):
        return []
    by_id = {p.id: p for p in participants}
    order = {p.id: position for position, p in enumerate(participants)}
    speed = {p.id: p.seconds_per_unit for p in participants}
    start = {p.id: (now if p.holding == 0 else max(now, p.busy_until)) for p in participants}
    room = {p.id: p.room for p in participants}
    handed: list[tuple[Share, str]] = []
    free: list[Share] = []
    for share in pending:
        if share.intended in by_id:
            if room[share.intended] > 0:
                handed.append((share, share.intended))
                start[share.intended] += speed[share.intended] * share.units
                room[share.intended] -= 1
        else:
            free.append(share)
    planned = dict(start)
    placed_slots = dict(room)
    deferred: list[tuple[Share, float]] = []
    for share in free:
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


def lagging(participant: Participant, lag_limit: float) -> Participant:
    """A participant lagging `lag_limit` times behind holds one share at most: the one it runs."""
    return replace(participant, window=1) if participant.lag >= lag_limit else participant


def withdrawals_now(shares: dict[int, Share], participants: list[Participant], lag_limit: float) -> list[tuple[Share, ShareRun]]:
    """Shares waiting in the queue of a participant lagging `lag_limit` times behind: they go back to
    the line (not started, so nothing is lost), for whoever finishes them first. The lagging
    participant gets no share beyond the one it runs until it has delivered it (`lagging`)."""
    withdrawn: list[tuple[Share, ShareRun]] = []
    for holder in participants:
        if holder.lag < lag_limit:
            continue
        for index, _ in holder.finishes[1:]:
            share = shares.get(index)
            run = share.run_of(holder.id) if share is not None else None
            if share is not None and run is not None and run.started_at is None and len(share.live_runs()) == 1:
                withdrawn.append((share, run))
    return withdrawn


@dataclass(frozen=True)
class Backup:
    """A copy to start: `share` on `participant`, racing the copy on `lagging`."""

    share: Share
    participant: str
    lagging: str
    lag: float


def backups_now(shares: dict[int, Share], participants: list[Participant], now: float, backup_after: float,
                may_copy: Sequence[str]) -> list[Backup]:
    """Copies to start now of shares held by participants lagging `backup_after` times behind.

    Only participants in `may_copy` take copies, and only when idle (holding nothing). A share gets
    one copy at most. The shares expected last are copied first, each to the idle participant that
    would finish it soonest, and only when that is sooner than its lagging holder is expected to.
    """
    behind = [p for p in participants if p.lag >= backup_after]
    idle = [p for p in participants if p.id in may_copy and p.holding == 0 and p.room > 0]
    if not behind or not idle:
        return []
    candidates = sorted(
        ((finish, shares[index], holder) for holder in behind for index, finish in holder.finishes
         if index in shares and shares[index].state == ShareState.RUNNING and len(shares[index].live_runs()) == 1),
        key=lambda item: (-item[0], item[1].index),
    )
    backups: list[Backup] = []
    for finish, share, holder in candidates:
        takers = [p for p in idle if now + p.seconds_per_unit * share.units < finish]
        if not takers:
            continue
        taker = min(takers, key=lambda p: p.seconds_per_unit)
        idle.remove(taker)
        backups.append(Backup(share, taker.id, holder.id, holder.lag))
        if not idle:
            break
    return backups


class ShareQueue:
    """The shares of one job, their copies, and who may still take them."""

    def __init__(self, shares: Sequence[Share]) -> None:
        self.shares = {share.index: share for share in shares}
        self.excluded: dict[str, str] = {}
        """participant id -> why it may not take more shares of this job ("worker 'x': cause")."""

    def pending(self) -> list[Share]:
        return sorted((s for s in self.shares.values() if s.state == ShareState.PENDING), key=lambda s: s.index)

    def held_by(self, participant: str) -> list[tuple[Share, ShareRun]]:
        """The live copies `participant` holds, in the order it was given them."""
        return self.holdings().get(participant, [])

    def holdings(self) -> dict[str, list[tuple[Share, ShareRun]]]:
        """Every participant's live copies, each in the order it was given them (one pass over the shares)."""
        held: dict[str, list[tuple[Share, ShareRun]]] = {}
        for share in self.shares.values():
            if share.state == ShareState.RUNNING:
                for run in share.live_runs():
                    held.setdefault(run.participant, []).append((share, run))
        for runs in held.values():
            runs.sort(key=lambda item: item[1].claimed_at)
        return held

    def is_finished(self) -> bool:
        return all(s.state == ShareState.DONE for s in self.shares.values())

    def claim(self, share: Share, participant: str, now: float, expected_seconds: float, backup_reason: str | None = None) -> ShareRun:
        """Hands the share (or, with `backup_reason`, a copy of a running share) to a participant."""
        run = ShareRun(participant, now, expected_seconds, backup_reason=backup_reason)
        share.runs.append(run)
        share.state = ShareState.RUNNING
        return run

    def deliver(self, share: Share, run: ShareRun) -> list[ShareRun]:
        """`run` delivered first: the share is done. Returns the other live copies, to be stopped."""
        others = [other for other in share.live_runs() if other is not run]
        for other in others:
            other.state = RunState.CANCELLED
        run.state = RunState.WON
        share.state = ShareState.DONE
        share.delivered_by = run.participant
        return others

    def give_back(self, share: Share, participant: str, failure: str) -> None:
        """A failed copy: the participant is excluded from this job, and the share waits again
        unless another copy still runs.

        `failure` names the participant for people: "worker 'Box 2': connection refused".
        """
        share.attempts.append(failure)
        self.excluded[participant] = failure
        run = share.run_of(participant)
        if run is not None:
            run.state = RunState.FAILED
        if share.state == ShareState.DONE:
            return
        if share.intended == participant:
            share.intended = None
        if not share.live_runs():
            share.state = ShareState.PENDING

    def withdraw(self, share: Share, run: ShareRun) -> None:
        """Stops one copy that did not fail (its participant failed another share); the share waits
        again unless another copy still runs."""
        run.state = RunState.CANCELLED
        if share.intended == run.participant:
            share.intended = None
        if share.state == ShareState.RUNNING and not share.live_runs():
            share.state = ShareState.PENDING

    def reject(self, share: Share, participant: str, failure: str) -> None:
        """A delivered share turned out unusable (wrong image size): it runs again elsewhere."""
        share.state = ShareState.PENDING
        share.delivered_by = None
        share.attempts.append(failure)
        self.excluded[participant] = failure
        if share.intended == participant:
            share.intended = None

    def fail_pending(self) -> list[Share]:
        """Marks every share that was not delivered as failed (stopping its copies); returns them."""
        failed = [s for s in self.shares.values() if s.state != ShareState.DONE]
        for share in failed:
            share.state = ShareState.FAILED
            for run in share.live_runs():
                run.state = RunState.CANCELLED
        return failed
