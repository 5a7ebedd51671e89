"""When a pool grows and when it shrinks, decided from plain numbers (no clock, no I/O), so every
rule is tested with made-up times.

- A pool starts a member to keep `min` running, or when work has waited `grow_after_seconds` with
  every participant busy. A member starting in any pool is the answer to waiting work: no other
  starts for it meanwhile, and the wait counts again from when a member last started or came online.
  Pools are tried in the order they are listed; one wait starts one member.
- A start is refused at `max` members (starting ones count), when it would take the day's usage past
  the budget (a new member runs at least `idle_seconds`), after `max_starts_per_10min` starts in the
  last 10 minutes, and while the pool backs off after a failed start. A start asked for by hand
  obeys `max` and the budget only.
- A member idle for `idle_seconds` is stopped, the longest idle first, never below `min`; a member
  that holds a share is never idle. Once the day's budget is spent every member is stopped as soon
  as it holds no share, `min` or not.
"""

from __future__ import annotations

from dataclasses import dataclass

from ...config.models import PoolConfig

BACKOFF_FIRST_SECONDS = 10.0
BACKOFF_MAX_SECONDS = 900.0
STOP_RETRY_FIRST_SECONDS = 30.0
STOP_RETRY_MAX_SECONDS = 600.0
HOUR = 3600.0


@dataclass(frozen=True)
class PoolFacts:
    """One pool at one moment."""

    live: int
    """Members starting or online (not those being stopped)."""
    used_seconds: float
    """Member-seconds used today, running members' time so far included."""
    recent_starts: int
    """Starts in the last 10 minutes."""
    backoff_until: float | None = None
    """No automatic start before this time (after a failed start)."""


def backoff_seconds(failures: int) -> float:
    """How long a pool waits before it tries again after `failures` failed starts in a row."""
    return min(BACKOFF_MAX_SECONDS, BACKOFF_FIRST_SECONDS * 2 ** max(0, failures - 1))


def stop_retry_seconds(failures: int) -> float:
    """How long before a failed stop command is run again."""
    return min(STOP_RETRY_MAX_SECONDS, STOP_RETRY_FIRST_SECONDS * 2 ** max(0, failures - 1))


def hours(seconds: float) -> str:
    return f"{seconds / HOUR:.2f}"


def budget_spent(pool: PoolConfig, used_seconds: float) -> bool:
    return used_seconds >= pool.budget_hours_per_day * HOUR


def start_refusal(pool: PoolConfig, facts: PoolFacts, now: float, by_hand: bool = False) -> str | None:
    """Why the pool may not start a member now, or None when it may."""
    if facts.live >= pool.max:
        return f"at its max of {pool.max} member{'s' if pool.max != 1 else ''}"
    budget = pool.budget_hours_per_day * HOUR
    if facts.used_seconds + pool.idle_seconds > budget:
        return (f"budget: {hours(facts.used_seconds)} of {hours(budget)} member-hours used today, and a new member "
                f"runs at least {pool.idle_seconds:g}s")
    if by_hand:
        return None
    if facts.backoff_until is not None and now < facts.backoff_until:
        return f"backing off after a failed start; next try in {facts.backoff_until - now:.0f}s"
    if facts.recent_starts >= pool.max_starts_per_10min:
        return f"{facts.recent_starts} starts in the last 10 minutes, its limit"
    return None


def is_budget_refusal(refusal: str | None) -> bool:
    return refusal is not None and refusal.startswith("budget:")


def growth_reason(pool: PoolConfig, facts: PoolFacts, waited: float | None) -> str | None:
    """Why the pool wants one more member now, or None. `waited` is how long work has waited with
    every participant busy (since the latest start of any pool), or None when nothing waits."""
    if facts.live < pool.min:
        return f"keeping its min of {pool.min}"
    if waited is not None and waited >= pool.grow_after_seconds:
        return f"work waited {waited:.1f}s with every participant busy"
    return None


def idle_to_stop(pool: PoolConfig, live: int, idle_since: dict[str, float], now: float) -> list[str]:
    """Members idle past `idle_seconds` to stop now, the longest idle first, keeping `min` running.
    `idle_since` holds the online members that hold no share, with since when."""
    overdue = sorted((since, member_id) for member_id, since in idle_since.items() if now - since >= pool.idle_seconds)
    allowed = max(0, live - pool.min)
    return [member_id for _, member_id in overdue[:allowed]]
