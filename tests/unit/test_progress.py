"""A share's progress counts nodes as ComfyUI's own progress does, so a run without a sampler moves too."""

from __future__ import annotations

from distributed.shares import NodeCount, ShareProgress


def test_nodes_without_steps_move_the_share_from_zero_to_one() -> None:
    count = NodeCount(["1", "2", "3", "4"])
    fractions = [count.started("1").fraction, count.started("2").fraction, count.started("3").fraction,
                 count.started("4").fraction, count.finished("4").fraction]
    assert fractions == [0.0, 0.25, 0.5, 0.75, 1.0]


def test_sampler_steps_fill_their_node_share() -> None:
    count = NodeCount(["1", "2"])
    count.started("1")
    assert count.stepped("1", 5, 20).fraction == 0.125
    assert count.stepped("2", 10, 20).fraction == 0.75  # a step of another node means the first is done


def test_cached_nodes_count_as_done() -> None:
    count = NodeCount(["1", "2", "3", "4"])
    assert count.cached(["1", "2", 3]).done == 3


def test_nodes_outside_the_prompt_are_not_counted() -> None:
    count = NodeCount(["1", "2"])
    assert count.cached(["1", "9", "not-in-the-prompt"]).done == 1
    assert count.started("9").node is None
    assert count.finished("9").done == 1


def test_a_workers_odd_numbers_are_kept_in_range() -> None:
    assert ShareProgress.of(50, 10, "x").value == 10
    assert ShareProgress.of("a", True, None) == ShareProgress(0, 1, None)
    assert ShareProgress.of(3, 4, "n" * 500).node == "n" * 100


def test_the_json_says_how_far_the_share_is() -> None:
    assert ShareProgress(1, 4, "7", done=2, total=4).as_json() == {
        "value": 1, "max": 4, "node": "7", "done": 2, "total": 4, "fraction": 0.5625,
    }
