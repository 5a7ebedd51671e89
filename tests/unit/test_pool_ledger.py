"""The pools' ledger in the state folder: member-hours per local day, recent starts, a safe file."""

from __future__ import annotations

import datetime
import os
import stat
from pathlib import Path

from distributed.workers.pools.ledger import LEDGER_FILE, Ledger, MemberRecord, day_of, write_private


def local(year: int, month: int, day: int, hour: int, minute: int = 0) -> float:
    return datetime.datetime(year, month, day, hour, minute).timestamp()


def record(started_at: float, pool: str = "cloud") -> MemberRecord:
    return MemberRecord("cloud-abc123", pool, started_at=started_at, stop_command=["stop", "cloud-abc123"], accounted_until=started_at)


def test_member_hours_are_counted_on_the_local_day_they_were_used() -> None:
    ledger = Ledger(Path("unused"))
    member = record(local(2025, 3, 1, 23, 30))

    ledger.credit(member, local(2025, 3, 1, 23, 45))
    ledger.credit(member, local(2025, 3, 2, 1, 0))

    assert ledger.usage["cloud"] == {"2025-03-01": 1800.0, "2025-03-02": 3600.0}
    assert ledger.used_seconds("cloud", local(2025, 3, 2, 12)) == 3600.0
    assert ledger.used_seconds("other", local(2025, 3, 2, 12)) == 0.0


def test_time_is_never_counted_twice() -> None:
    ledger = Ledger(Path("unused"))
    member = record(local(2025, 3, 1, 10))

    ledger.credit(member, local(2025, 3, 1, 11))
    ledger.credit(member, local(2025, 3, 1, 10, 30))  # an older time changes nothing

    assert ledger.used_seconds("cloud", local(2025, 3, 1, 12)) == 3600.0


def test_starts_older_than_ten_minutes_no_longer_count() -> None:
    ledger = Ledger(Path("unused"))
    for at in (1000.0, 1300.0, 1599.0):
        ledger.record_start("cloud", at)

    assert ledger.recent_starts("cloud", 1599.9) == [1000.0, 1300.0, 1599.0]
    assert ledger.recent_starts("cloud", 1600.0) == [1300.0, 1599.0]


def test_the_ledger_survives_a_restart_and_only_its_owner_can_read_it(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / LEDGER_FILE)
    member = record(local(2025, 3, 1, 10))
    member.url, member.token, member.pid = "https://pod.example", "secret-token-1234", 4321
    ledger.members[member.member_id] = member
    ledger.credit(member, local(2025, 3, 1, 11))
    ledger.record_start("cloud", 1234.5)
    write_private(ledger.path, ledger.dump())

    loaded = Ledger.load(tmp_path)

    assert loaded.members == ledger.members and loaded.usage == ledger.usage and loaded.starts == ledger.starts
    if os.name == "posix":
        assert stat.S_IMODE(ledger.path.stat().st_mode) == 0o600


def test_an_unreadable_ledger_is_kept_aside_and_not_overwritten(tmp_path: Path) -> None:
    (tmp_path / LEDGER_FILE).write_text('{"members": [{"pool": "cloud"}]}')

    ledger = Ledger.load(tmp_path)

    assert ledger.members == {} and not (tmp_path / LEDGER_FILE).exists()
    (aside,) = tmp_path.glob(f"{LEDGER_FILE}.broken-*")
    assert aside.read_text() == '{"members": [{"pool": "cloud"}]}'


def test_a_day_is_the_masters_local_calendar_day() -> None:
    assert day_of(local(2025, 12, 31, 23, 59)) == "2025-12-31"
    assert day_of(local(2026, 1, 1, 0, 0)) == "2026-01-01"
