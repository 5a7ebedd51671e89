"""Telling the shares an earlier run of this master left on a worker from everyone else's prompts."""

from __future__ import annotations

from pathlib import Path

from distributed.workers.orphans import MASTER_ID_FILE, ShareOwner


def test_a_share_of_an_earlier_run_of_this_master_is_left_behind() -> None:
    earlier, now = ShareOwner("abc123", "run1"), ShareOwner("abc123", "run2")

    assert now.left_behind(earlier.client_id(3))


def test_shares_of_this_run_other_masters_and_other_clients_are_not() -> None:
    now = ShareOwner("abc123", "run2")

    assert not now.left_behind(now.client_id(0))
    assert not now.left_behind(ShareOwner("abc1234", "run1").client_id(0))  # another master, a longer id
    assert not now.left_behind(ShareOwner("other", "run1").client_id(0))
    assert not now.left_behind("3f2a9c-browser-tab")
    assert not now.left_behind(None)


def test_the_master_id_outlives_a_restart_and_the_run_id_does_not(tmp_path: Path) -> None:
    first, second = ShareOwner.load(tmp_path), ShareOwner.load(tmp_path)

    assert first.master_id == second.master_id
    assert first.run_id != second.run_id
    assert second.left_behind(first.client_id(0))


def test_an_unreadable_master_id_is_replaced(tmp_path: Path) -> None:
    (tmp_path / MASTER_ID_FILE).write_text("../not an id\n", encoding="utf-8")

    owner = ShareOwner.load(tmp_path)

    assert owner.master_id.isalnum()
    assert (tmp_path / MASTER_ID_FILE).read_text(encoding="utf-8") == owner.master_id
