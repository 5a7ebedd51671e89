"""Share assignment: held on the master, handed out by earliest expected finish, failures excluded."""

from __future__ import annotations

from distributed.jobs.scheduler import Participant, ShareQueue, assignments_now
from distributed.shares import Share, ShareState


def _idle(worker_id: str, seconds: float = 1.0) -> Participant:
    return Participant(worker_id, seconds, busy_until=0.0, holding=0)


def test_equal_idle_participants_take_shares_in_list_order_with_one_queued_each() -> None:
    pending = [Share(i) for i in range(1, 7)]
    handed = assignments_now(pending, [_idle("a"), _idle("b")], now=0.0)
    assert [(s.index, w) for s, w in handed] == [(1, "a"), (2, "b"), (3, "a"), (4, "b")]


def test_slow_participant_is_not_given_the_last_share_a_fast_one_finishes_sooner() -> None:
    fast_busy = Participant("fast", 1.0, busy_until=1.0, holding=1)
    slow_idle = _idle("slow", 3.0)
    handed = assignments_now([Share(9)], [fast_busy, slow_idle], now=0.0)
    assert handed == [(handed[0][0], "fast")]


def test_share_waits_on_the_master_when_every_window_is_full() -> None:
    full = Participant("a", 1.0, busy_until=2.0, holding=2)
    assert assignments_now([Share(1)], [full], now=0.0) == []


def test_three_participants_at_speeds_1_1_and_a_third_finish_24_shares_near_the_ideal() -> None:
    """Simulated with exact speeds: the makespan stays within 10% of total work / total speed."""
    seconds = {"a": 1.0, "b": 1.0, "c": 3.0}
    queue = ShareQueue([Share(i) for i in range(24)])
    running: dict[int, tuple[str, float]] = {}
    finish_of: dict[str, float] = {w: 0.0 for w in seconds}
    now = 0.0
    while not queue.is_finished():
        participants = []
        for worker, per_share in seconds.items():
            held = queue.held_by(worker)
            participants.append(Participant(worker, per_share, max(now, finish_of[worker]), len(held)))
        for share, worker in assignments_now(queue.pending(), participants, now):
            queue.claim(share, worker, now)
            finish_of[worker] = max(now, finish_of[worker]) + seconds[worker]
            running[share.index] = (worker, finish_of[worker])
        index, (worker, done_at) = min(running.items(), key=lambda item: item[1][1])
        now = done_at
        del running[index]
        queue.complete(queue.shares[index])
    ideal = 24 / (1 + 1 + 1 / 3)
    assert now <= 1.10 * ideal


def test_failed_share_goes_back_and_the_participant_is_excluded() -> None:
    queue = ShareQueue([Share(1), Share(2)])
    first = queue.shares[1]
    queue.claim(first, "a", 0.0)
    queue.give_back(first, "a", "worker 'A': died")
    assert queue.excluded == {"a": "worker 'A': died"}
    assert queue.pending()[0].index == 1 and first.attempts == ["worker 'A': died"]


def test_job_is_finished_only_when_every_share_is_done() -> None:
    queue = ShareQueue([Share(1), Share(2)])
    queue.complete(queue.shares[1])
    assert not queue.is_finished()
    queue.complete(queue.shares[2])
    assert queue.is_finished()


def test_fail_pending_marks_undelivered_shares_failed() -> None:
    queue = ShareQueue([Share(1), Share(2)])
    queue.complete(queue.shares[1])
    assert [s.index for s in queue.fail_pending()] == [2]
    assert queue.shares[2].state == ShareState.FAILED


def test_share_placed_on_a_full_window_goes_now_to_an_idle_participant_finishing_no_later() -> None:
    full = Participant("a", 1.0, busy_until=1.0, holding=2)
    idle = _idle("b", 2.0)
    handed = assignments_now([Share(5)], [full, idle], now=0.0)
    assert [(s.index, w) for s, w in handed] == [(5, "b")]
