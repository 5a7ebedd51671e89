"""The speed model: learned per participant and workflow, sensible before the first run."""

from __future__ import annotations

from distributed.jobs.speed import SpeedModel


def test_unknown_workflow_gives_every_participant_the_same_estimate() -> None:
    assert SpeedModel().estimates("w", ["a", "b"]) == {"a": 1.0, "b": 1.0}


def test_participant_without_a_run_gets_the_median_of_the_others() -> None:
    model = SpeedModel()
    model.observe("w", "a", 2.0)
    model.observe("w", "b", 4.0)
    assert model.estimates("w", ["a", "b", "c"])["c"] == 3.0


def test_estimate_is_per_unit_and_moves_towards_new_runs() -> None:
    model = SpeedModel()
    model.observe("w", "a", 8.0, units=4)
    model.observe("w", "a", 4.0, units=1)
    assert 2.0 < model.estimates("w", ["a"])["a"] < 4.0


def test_relative_speed_is_one_for_the_fastest() -> None:
    model = SpeedModel()
    model.observe("w", "a", 1.0)
    model.observe("w", "b", 3.0)
    assert model.latest_relative_speed("a") == 1.0
    assert model.latest_relative_speed("b") == 0.333
    assert model.snapshot()["w"]["b"]["relative_speed"] == 0.333
