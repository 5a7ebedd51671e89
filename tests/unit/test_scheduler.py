"""Share assignment: pull-based, lowest share first, failed participants excluded."""

from __future__ import annotations

from distributed.scheduler import ShareQueue, ShareState


def test_free_participant_takes_the_lowest_pending_share() -> None:
    queue = ShareQueue([3, 1, 2])
    assert queue.claim("a").index == 1
    assert queue.claim("b").index == 2


def test_participant_runs_one_share_at_a_time() -> None:
    queue = ShareQueue([1, 2])
    queue.claim("a")
    assert queue.claim("a") is None


def test_failed_share_goes_back_to_the_front_and_the_participant_is_excluded() -> None:
    queue = ShareQueue([1, 2])
    first = queue.claim("a")
    queue.claim("b")
    queue.give_back(first, "a", "worker 'A': died")
    assert queue.claim("a") is None
    assert queue.excluded == {"a": "worker 'A': died"}
    assert queue.pending()[0].index == 1 and first.attempts == ["worker 'A': died"]


def test_job_is_finished_only_when_every_share_is_done() -> None:
    queue = ShareQueue([1, 2])
    one, two = queue.claim("a"), queue.claim("b")
    queue.complete(one)
    assert not queue.is_finished()
    queue.complete(two)
    assert queue.is_finished()


def test_fail_pending_marks_undelivered_shares_failed() -> None:
    queue = ShareQueue([1, 2])
    queue.complete(queue.claim("a"))
    assert [s.index for s in queue.fail_pending()] == [2]
    assert queue.shares[2].state == ShareState.FAILED
