"""When a pool grows and shrinks, with made-up times: max, budget, rate limit, backoff, min, idle."""

from __future__ import annotations

from distributed.config.models import PoolConfig
from distributed.workers.pools import policy
from distributed.workers.pools.policy import PoolFacts


def pool(**fields: object) -> PoolConfig:
    base = {"name": "cloud", "min": 0, "max": 2, "start_command": ["start"], "stop_command": ["stop"], "idle_seconds": 600,
            "grow_after_seconds": 30, "max_starts_per_10min": 3, "budget_hours_per_day": 2}
    return PoolConfig.model_validate({**base, **fields})


def facts(live: int = 0, used: float = 0.0, starts: int = 0, backoff_until: float | None = None) -> PoolFacts:
    return PoolFacts(live=live, used_seconds=used, recent_starts=starts, backoff_until=backoff_until)


def test_a_pool_below_its_min_wants_a_member_with_no_work_waiting() -> None:
    assert policy.growth_reason(pool(min=1), facts(live=0), waited=None) == "keeping its min of 1"
    assert policy.growth_reason(pool(min=1), facts(live=1), waited=None) is None


def test_a_pool_grows_only_once_work_waited_its_grow_after() -> None:
    assert policy.growth_reason(pool(), facts(), waited=29.9) is None
    assert policy.growth_reason(pool(), facts(), waited=30.0) == "work waited 30.0s with every participant busy"


def test_a_pool_at_its_max_starts_no_member_starting_ones_included() -> None:
    assert policy.start_refusal(pool(max=2), facts(live=1), now=0) is None
    assert policy.start_refusal(pool(max=2), facts(live=2), now=0) == "at its max of 2 members"


def test_a_start_that_would_take_the_day_past_the_budget_is_refused() -> None:
    budget = pool(budget_hours_per_day=1, idle_seconds=600)  # a new member costs at least 600 s

    assert policy.start_refusal(budget, facts(used=3000), now=0) is None
    refusal = policy.start_refusal(budget, facts(used=3001), now=0)
    assert refusal == "budget: 0.83 of 1.00 member-hours used today, and a new member runs at least 600s"
    assert policy.is_budget_refusal(refusal)


def test_the_budget_is_spent_at_its_last_second() -> None:
    assert not policy.budget_spent(pool(budget_hours_per_day=1), 3599.9)
    assert policy.budget_spent(pool(budget_hours_per_day=1), 3600)


def test_the_rate_limit_refuses_a_start_past_n_in_ten_minutes() -> None:
    assert policy.start_refusal(pool(max_starts_per_10min=3), facts(starts=2), now=0) is None
    assert policy.start_refusal(pool(max_starts_per_10min=3), facts(starts=3), now=0) == "3 starts in the last 10 minutes, its limit"


def test_after_a_failed_start_the_pool_backs_off_doubling_each_time() -> None:
    assert [policy.backoff_seconds(n) for n in (1, 2, 3, 10)] == [10, 20, 40, 900]
    refusal = policy.start_refusal(pool(), facts(backoff_until=110.0), now=100.0)
    assert refusal == "backing off after a failed start; next try in 10s"
    assert policy.start_refusal(pool(), facts(backoff_until=110.0), now=110.0) is None


def test_a_start_by_hand_obeys_max_and_budget_but_not_the_rate_limit_or_backoff() -> None:
    busy = facts(starts=3, backoff_until=1e9)

    assert policy.start_refusal(pool(), busy, now=0, by_hand=True) is None
    assert policy.start_refusal(pool(max=1), facts(live=1), now=0, by_hand=True) == "at its max of 1 member"
    assert policy.is_budget_refusal(policy.start_refusal(pool(), facts(used=7200), now=0, by_hand=True))


def test_idle_members_stop_longest_idle_first_never_below_min() -> None:
    idle_since = {"a": 100.0, "b": 50.0, "c": 390.0}
    config = pool(min=1, max=3, idle_seconds=300)

    assert policy.idle_to_stop(config, live=3, idle_since=idle_since, now=400.0) == ["b", "a"]
    assert policy.idle_to_stop(config, live=2, idle_since=idle_since, now=400.0) == ["b"]
    assert policy.idle_to_stop(config, live=3, idle_since=idle_since, now=349.0) == []
