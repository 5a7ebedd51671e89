"""The speed model: warm runs set estimates, cold runs only bound them, uncertain estimates are
optimistic, and estimates fade so a participant is measured again."""

from __future__ import annotations

import pytest

from distributed.jobs.speed import HALF_LIFE_SECONDS, SpeedModel


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _certain(model: SpeedModel, participant: str, seconds: float, key: str = "w") -> None:
    model.observe(key, participant, seconds)
    model.observe(key, participant, seconds)


def test_unknown_workflow_gives_every_participant_the_same_estimate() -> None:
    assert SpeedModel().estimates("w", ["a", "b"]) == {"a": 1.0, "b": 1.0}


def test_slow_first_runs_of_equal_participants_leave_them_equal() -> None:
    """The issue's figures: cold first runs of 1.65 s, 10.43 s and 10.75 s on three equal CPUs."""
    model = SpeedModel()
    for participant, seconds in (("cpu-1", 1.65), ("master", 10.43), ("cpu-2", 10.75)):
        model.observe("w", participant, seconds, warm=False)

    assert set(model.estimates("w", ["master", "cpu-1", "cpu-2"]).values()) == {1.65}


def test_a_cold_run_never_raises_an_estimate() -> None:
    model = SpeedModel()
    _certain(model, "a", 1.0)
    model.observe("w", "a", 10.0, warm=False)
    assert model.estimates("w", ["a"])["a"] == 1.0


def test_a_cold_run_lowers_an_estimate_above_it() -> None:
    model = SpeedModel()
    _certain(model, "a", 4.0)
    model.observe("w", "a", 2.0, warm=False)
    assert model.estimates("w", ["a"])["a"] == 2.0


def test_an_estimate_of_one_warm_run_counts_as_fast_as_the_fastest_known() -> None:
    model = SpeedModel()
    _certain(model, "a", 1.0)
    model.observe("w", "b", 3.0)
    assert model.estimates("w", ["a", "b"]) == {"a": 1.0, "b": 1.0}
    model.observe("w", "b", 3.0)
    assert model.estimates("w", ["a", "b"]) == {"a": 1.0, "b": 3.0}


def test_the_estimate_is_the_median_of_recent_warm_runs_so_one_odd_run_does_not_swing_it() -> None:
    model = SpeedModel()
    model.observe("w", "a", 2.0)
    model.observe("w", "a", 4.0)
    assert model.estimates("w", ["a"])["a"] == pytest.approx(3.0)
    for seconds in (1.0, 1.0, 10.0):
        model.observe("w", "a", seconds)
    assert model.estimates("w", ["a"])["a"] == 2.0
    for _ in range(3):
        model.observe("w", "a", 1.0)
    assert model.estimates("w", ["a"])["a"] == 1.0


def test_two_warm_runs_that_disagree_leave_the_estimate_uncertain() -> None:
    """One slow warm run (the GPU was busy with something else) must not starve a participant."""
    model = SpeedModel()
    _certain(model, "a", 1.0)
    model.observe("w", "b", 10.0)
    model.observe("w", "b", 1.0)
    assert not model.is_certain("w", "b")
    assert model.estimates("w", ["a", "b"])["b"] == 1.0


def test_an_estimate_fades_until_the_participant_is_measured_again() -> None:
    clock = _Clock()
    model = SpeedModel(clock)
    _certain(model, "a", 1.0)
    for _ in range(4):
        model.observe("w", "b", 5.0)
    assert model.estimates("w", ["a", "b"])["b"] == 5.0

    clock.now += 2 * HALF_LIFE_SECONDS

    assert not model.is_certain("w", "b")
    assert model.estimates("w", ["a", "b"])["b"] == 1.0


def test_copies_stopped_after_running_long_raise_the_estimate() -> None:
    model = SpeedModel()
    _certain(model, "a", 1.0)
    model.observe_at_least("w", "a", 0.5)
    assert model.estimates("w", ["a"])["a"] == 1.0
    model.observe_at_least("w", "a", 9.0)
    model.observe_at_least("w", "a", 9.0)
    assert model.estimates("w", ["a"])["a"] == 5.0


def test_estimate_is_per_unit() -> None:
    model = SpeedModel()
    model.observe("w", "a", 8.0, units=4)
    model.observe("w", "a", 8.0, units=4)
    assert model.estimates("w", ["a"])["a"] == 2.0


def test_relative_speed_is_one_for_the_fastest_and_unknown_while_uncertain() -> None:
    model = SpeedModel()
    _certain(model, "a", 1.0)
    _certain(model, "b", 3.0)
    model.observe("w", "c", 2.0)
    assert model.latest_relative_speed("a") == 1.0
    assert model.latest_relative_speed("b") == 0.333
    assert model.latest_relative_speed("c") is None
    assert model.snapshot()["w"]["b"]["relative_speed"] == 0.333
    assert model.snapshot()["w"]["c"]["certain"] is False


def test_the_latest_run_is_what_a_participant_shows_now_until_it_is_an_hour_old() -> None:
    clock = _Clock()
    model = SpeedModel(clock)
    _certain(model, "a", 1.0)
    model.observe_at_least("w", "a", 30.0)  # a copy elsewhere came first after 30 s: a hangs, or crawls

    assert model.latest_seconds("w", "a") == 30.0 and model.estimates("w", ["a"])["a"] == 1.0
    clock.now += HALF_LIFE_SECONDS + 1
    assert model.latest_seconds("w", "a") is None
