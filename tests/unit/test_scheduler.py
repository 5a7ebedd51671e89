"""Share assignment: held on the master, handed out by earliest expected finish, failures excluded,
copies started for shares of a participant that lags far behind its speed."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from distributed.jobs.scheduler import (
    Participant,
    ShareQueue,
    assignments_now,
    backups_now,
    lagging,
    participant_view,
    withdrawals_now,
)
from distributed.shares import RunState, Share, ShareRun, ShareState


def _idle(worker_id: str, seconds: float = 1.0, window: int = 2) -> Participant:
    return Participant(worker_id, seconds, busy_until=0.0, holding=0, window=window)


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


def test_share_placed_on_a_full_window_goes_now_to_an_idle_participant_finishing_no_later() -> None:
    full = Participant("a", 1.0, busy_until=1.0, holding=2)
    idle = _idle("b", 2.0)
    handed = assignments_now([Share(5)], [full, idle], now=0.0)
    assert [(s.index, w) for s, w in handed] == [(5, "b")]


def test_a_share_dealt_to_a_participant_goes_to_it_even_when_another_looks_faster() -> None:
    """Fan-out: one share per participant, whatever the estimates say."""
    shares = [Share(1, intended="slow"), Share(2, intended="fast")]
    handed = assignments_now(shares, [_idle("fast", 1.0), _idle("slow", 10.0)], now=0.0)
    assert sorted((s.index, w) for s, w in handed) == [(1, "slow"), (2, "fast")]


def test_a_dealt_share_whose_participant_is_gone_goes_to_anyone() -> None:
    handed = assignments_now([Share(1, intended="gone")], [_idle("a")], now=0.0)
    assert [(s.index, w) for s, w in handed] == [(1, "a")]


def test_an_idle_master_with_a_window_of_one_takes_one_share() -> None:
    handed = assignments_now([Share(1), Share(2)], [_idle("master", window=1)], now=0.0)
    assert [(s.index, w) for s, w in handed] == [(1, "master")]


def _held(index: int, participant: str, claimed_at: float, started_at: float | None) -> tuple[int, ShareRun, int]:
    run = ShareRun(participant, claimed_at, 1.0, started_at=started_at)
    return index, run, 1


def test_a_participant_on_time_is_busy_until_its_shares_are_expected_done() -> None:
    view = participant_view("a", 2.0, [_held(1, "a", 0.0, 0.5), _held(2, "a", 0.0, None)], free_since=0.0, now=1.0)
    assert view.busy_until == 4.5 and view.lag == 0.0
    assert view.finishes == ((1, 2.5), (2, 4.5))


def test_a_participant_past_its_expected_time_is_judged_at_least_as_slow_as_it_shows() -> None:
    view = participant_view("a", 1.0, [_held(1, "a", 0.0, 0.0), _held(2, "a", 0.0, None)], free_since=0.0, now=4.0)
    assert view.lag == 4.0 and view.seconds_per_unit == 4.0
    assert view.finishes == ((1, 7.0), (2, 11.0))


def test_a_participant_whose_last_share_took_five_times_longer_is_judged_that_slow() -> None:
    view = participant_view("a", 1.0, [_held(1, "a", 0.0, 1.0), _held(2, "a", 0.0, None)], free_since=0.0, now=2.0,
                            latest_seconds_per_unit=5.0)
    assert view.lag == 5.0 and view.seconds_per_unit == 5.0
    assert view.finishes == ((1, 6.0), (2, 11.0))


def test_a_queued_share_of_a_lagging_participant_is_copied_to_an_idle_one() -> None:
    running, queued = _running(1, "slow"), Share(2)
    queue = ShareQueue([running, queued])
    queue.claim(queued, "slow", 0.0, 1.0)
    slow = participant_view("slow", 1.0, [(1, running.runs[0], 1), (2, queued.runs[0], 1)], free_since=0.0, now=0.5,
                            latest_seconds_per_unit=5.0)
    backups = backups_now(queue.shares, [slow, _idle("fast")], now=0.5, backup_after=2.0, may_copy=["fast"])
    assert [(b.share.index, b.participant) for b in backups] == [(2, "fast")]


def test_a_lagging_participant_gives_back_the_shares_waiting_in_its_queue_and_holds_one_at_most() -> None:
    running, queued = _running(1, "slow"), Share(2)
    queue = ShareQueue([running, queued])
    queue.claim(queued, "slow", 0.0, 1.0)
    slow = participant_view("slow", 1.0, [(1, running.runs[0], 1), (2, queued.runs[0], 1)], free_since=0.0, now=3.0)

    assert withdrawals_now(queue.shares, [slow], lag_limit=2.0) == [(queued, queued.runs[0])]
    assert lagging(slow, 2.0).window == 1 and lagging(slow, 4.0).window == 2
    queued.runs[0].started_at = 3.0
    assert withdrawals_now(queue.shares, [slow], lag_limit=2.0) == []  # started: only a copy can race it


def test_a_few_hundred_milliseconds_late_is_no_lag_however_short_the_share() -> None:
    view = participant_view("a", 0.2, [_held(1, "a", 0.0, 0.0)], free_since=0.0, now=1.5)
    assert view.lag == 0.0 and view.window == 2


def test_a_participant_slow_by_its_own_measure_does_not_lag_while_it_is_measured_optimistically() -> None:
    """Its own warm runs take 4 s: placed as fast as the fastest (1 s) until certain, but no lag at 4 s."""
    view = participant_view("b", 1.0, [_held(1, "b", 0.0, 0.0)], free_since=0.0, now=4.0,
                            usual_seconds_per_unit=4.0, latest_seconds_per_unit=4.0)
    assert view.lag == 0.0


def test_an_overrun_of_a_guess_is_no_lag() -> None:
    view = participant_view("a", 1.0, [_held(1, "a", 0.0, 0.0)], free_since=0.0, now=4.0, has_basis=False)
    assert view.lag == 0.0


def _running(index: int, participant: str) -> Share:
    share = Share(index)
    ShareQueue([share]).claim(share, participant, 0.0, 1.0)
    share.runs[0].started_at = 0.0
    return share


def test_a_lagging_participants_share_is_copied_to_an_idle_one_that_finishes_it_sooner() -> None:
    shares = {3: _running(3, "slow")}
    slow = participant_view("slow", 1.0, [(3, shares[3].runs[0], 1)], free_since=0.0, now=4.0)
    backups = backups_now(shares, [slow, _idle("fast", 1.0)], now=4.0, backup_after=2.0, may_copy=["slow", "fast"])
    assert [(b.share.index, b.participant, b.lagging) for b in backups] == [(3, "fast", "slow")]
    assert backups[0].lag == 4.0


def test_no_copy_before_the_lag_reaches_the_threshold_or_without_an_idle_participant() -> None:
    shares = {3: _running(3, "slow")}
    slow = participant_view("slow", 1.0, [(3, shares[3].runs[0], 1)], free_since=0.0, now=1.5)
    assert backups_now(shares, [slow, _idle("fast")], now=1.5, backup_after=2.0, may_copy=["fast"]) == []
    late = participant_view("slow", 1.0, [(3, shares[3].runs[0], 1)], free_since=0.0, now=4.0)
    busy = Participant("fast", 1.0, busy_until=5.0, holding=1)
    assert backups_now(shares, [late, busy], now=4.0, backup_after=2.0, may_copy=["fast"]) == []


def test_no_copy_to_a_participant_that_may_not_take_copies_or_would_not_finish_sooner() -> None:
    shares = {3: _running(3, "slow")}
    slow = participant_view("slow", 1.0, [(3, shares[3].runs[0], 1)], free_since=0.0, now=4.0)
    assert backups_now(shares, [slow, _idle("master")], now=4.0, backup_after=2.0, may_copy=["slow"]) == []
    assert backups_now(shares, [slow, _idle("slower", 20.0)], now=4.0, backup_after=2.0, may_copy=["slower"]) == []


def test_a_share_gets_one_copy_at_most() -> None:
    share = _running(3, "slow")
    ShareQueue([share]).claim(share, "fast", 3.0, 1.0, backup_reason="slow is 3x slower than usual")
    slow = participant_view("slow", 1.0, [(3, share.runs[0], 1)], free_since=0.0, now=4.0)
    assert backups_now({3: share}, [slow, _idle("other")], now=4.0, backup_after=2.0, may_copy=["other"]) == []


def test_the_first_copy_delivered_wins_and_the_other_is_stopped() -> None:
    share = _running(3, "slow")
    queue = ShareQueue([share])
    copy = queue.claim(share, "fast", 3.0, 1.0, backup_reason="why")
    stopped = queue.deliver(share, copy)
    assert share.state == ShareState.DONE and share.participant == "fast"
    assert stopped == [share.runs[0]] and share.runs[0].state == RunState.CANCELLED


def test_a_failed_copy_leaves_the_share_running_on_the_other() -> None:
    share = _running(3, "slow")
    queue = ShareQueue([share])
    queue.claim(share, "fast", 3.0, 1.0, backup_reason="why")
    queue.give_back(share, "slow", "worker 'slow': died")
    assert share.state == ShareState.RUNNING and share.participant == "fast"
    assert queue.excluded == {"slow": "worker 'slow': died"}


def test_failed_share_goes_back_and_the_participant_is_excluded() -> None:
    queue = ShareQueue([Share(1), Share(2)])
    first = queue.shares[1]
    queue.claim(first, "a", 0.0, 1.0)
    queue.give_back(first, "a", "worker 'A': died")
    assert queue.excluded == {"a": "worker 'A': died"}
    assert queue.pending()[0].index == 1 and first.attempts == ["worker 'A': died"]


def test_job_is_finished_only_when_every_share_is_done() -> None:
    queue = ShareQueue([Share(1), Share(2)])
    for share in queue.shares.values():
        run = queue.claim(share, "a", 0.0, 1.0)
        assert not queue.is_finished()
        queue.deliver(share, run)
    assert queue.is_finished()


def test_fail_pending_marks_undelivered_shares_failed() -> None:
    queue = ShareQueue([Share(1), Share(2)])
    queue.deliver(queue.shares[1], queue.claim(queue.shares[1], "a", 0.0, 1.0))
    queue.claim(queue.shares[2], "a", 0.0, 1.0)
    assert [s.index for s in queue.fail_pending()] == [2]
    assert queue.shares[2].state == ShareState.FAILED and queue.shares[2].runs[0].state == RunState.CANCELLED


def _simulate(seconds: dict[str, float], count: int) -> float:
    """Runs `count` one-unit shares with the scheduler and the dispatcher's own participant model
    (`participant_view`) on participants that take exactly `seconds` per share; returns the makespan."""
    queue = ShareQueue([Share(i) for i in range(count)])
    free_since = dict.fromkeys(seconds, 0.0)
    now = 0.0

    def start_next(participant: str) -> None:
        held = queue.held_by(participant)
        if held and held[0][1].started_at is None:
            held[0][1].started_at = now

    while not queue.is_finished():
        participants = [
            participant_view(p, per_share, [(s.index, run, s.units) for s, run in queue.held_by(p)], free_since[p], now)
            for p, per_share in seconds.items()
        ]
        for share, participant in assignments_now(queue.pending(), participants, now):
            queue.claim(share, participant, now, seconds[participant])
            start_next(participant)
        finishing = [(run.started_at + seconds[p], p, share, run) for p in seconds for share, run in queue.held_by(p)[:1]
                     if run.started_at is not None]
        now, participant, share, run = min(finishing, key=lambda item: (item[0], item[1]))
        queue.deliver(share, run)
        free_since[participant] = now
        start_next(participant)
    return now


def _best_whole_share_makespan(seconds: dict[str, float], count: int) -> float:
    """Identical shares on participants of fixed speeds: each share to where it ends first is optimal."""
    ends = dict.fromkeys(seconds, 0.0)
    for _ in range(count):
        participant = min(seconds, key=lambda p: ends[p] + seconds[p])
        ends[participant] += seconds[participant]
    return max(ends.values())


def test_three_participants_at_speeds_1_1_and_a_third_finish_24_shares_at_the_best_whole_share_split() -> None:
    seconds = {"a": 1.0, "b": 1.0, "c": 3.0}
    assert _simulate(seconds, 24) <= _best_whole_share_makespan(seconds, 24) + 1e-9
    assert _simulate(seconds, 24) <= 1.10 * 24 / (1 + 1 + 1 / 3)


@settings(max_examples=150, deadline=None)
@given(
    st.lists(st.sampled_from([0.5, 1.0, 1.5, 2.0, 3.0, 5.0]), min_size=1, max_size=5),
    st.integers(min_value=1, max_value=40),
)
def test_with_exact_speeds_no_share_ends_later_than_the_best_whole_share_split(speeds: list[float], count: int) -> None:
    seconds = {f"p{i}": s for i, s in enumerate(speeds)}
    assert _simulate(seconds, count) <= _best_whole_share_makespan(seconds, count) + 1e-9
