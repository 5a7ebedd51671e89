"""What the master records of its pools in its state folder: every member it started, and the
member-hours and starts each pool used.

    <state_dir>/pools.json   {"version": 1, "members": [...], "usage": {pool: {day: seconds}},
                              "starts": {pool: [wall times]}}

A member is recorded before its start command runs and forgotten only once its stop command
succeeded, so a master restarted after a crash knows every member that may still run (and costs
money) and can adopt or stop it. The file holds the members' tokens (needed to reach them again),
so it is written readable by its owner only, atomically.

Member-hours count from launching the start command until the stop command succeeded, split by the
master's local day. Time a master was down counts too: its members may have run all along.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import logging
import os
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

LEDGER_FILE = "pools.json"
LEDGER_VERSION = 1
DAYS_KEPT = 8
RATE_WINDOW_SECONDS = 600.0


def day_of(wall: float) -> str:
    """The master's local calendar day of a wall-clock time, as an ISO date."""
    return datetime.date.fromtimestamp(wall).isoformat()


def next_midnight(wall: float) -> float:
    day = datetime.date.fromtimestamp(wall) + datetime.timedelta(days=1)
    return datetime.datetime.combine(day, datetime.time()).timestamp()


@dataclass
class MemberRecord:
    """One member as recorded: enough to reach it again, to stop it, and to count its hours."""

    member_id: str
    pool: str
    started_at: float
    """Wall-clock time its start command was launched."""
    stop_command: list[str]
    """Its stop command as it was when it started: used if its pool is gone by the time it stops."""
    url: str | None = None
    token: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    pid: int | None = None
    """The start command's process, and its start time (a PID alone can be reused)."""
    create_time: float | None = None
    accounted_until: float = 0.0
    """Up to when its time is counted in the pool's usage."""

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> MemberRecord:
        return cls(
            member_id=str(data["member_id"]), pool=str(data["pool"]), started_at=float(data["started_at"]),
            stop_command=[str(argument) for argument in data["stop_command"]], url=data.get("url"), token=data.get("token"),
            headers={str(k): str(v) for k, v in (data.get("headers") or {}).items()}, pid=data.get("pid"),
            create_time=data.get("create_time"), accounted_until=float(data.get("accounted_until") or data["started_at"]),
        )


class Ledger:
    """The members and usage of every pool; changed on the server loop, written by `write_private`."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.members: dict[str, MemberRecord] = {}
        self.usage: dict[str, dict[str, float]] = {}
        self.starts: dict[str, list[float]] = {}

    @classmethod
    def load(cls, state_dir: Path) -> Ledger:
        """Reads the ledger (blocking). An unreadable file is kept aside, reported, and replaced by an
        empty ledger: the members it named are then found through workers.json only."""
        ledger = cls(state_dir / LEDGER_FILE)
        try:
            data = json.loads(ledger.path.read_text(encoding="utf-8"))
            ledger.members = {record.member_id: record for record in map(MemberRecord.from_json, data.get("members", []))}
            ledger.usage = {str(pool): {str(day): float(s) for day, s in days.items()} for pool, days in data.get("usage", {}).items()}
            ledger.starts = {str(pool): [float(at) for at in times] for pool, times in data.get("starts", {}).items()}
        except FileNotFoundError:
            pass
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
            aside = ledger.path.with_name(f"{LEDGER_FILE}.broken-{int(time.time())}")
            logger.error("The pools' ledger %s is unreadable (%s); kept as %s, starting afresh", ledger.path, error, aside.name)
            with contextlib.suppress(OSError):
                ledger.path.replace(aside)
            ledger.members, ledger.usage, ledger.starts = {}, {}, {}
        return ledger

    def dump(self) -> str:
        return json.dumps({
            "version": LEDGER_VERSION,
            "members": [asdict(record) for record in self.members.values()],
            "usage": self.usage,
            "starts": self.starts,
        }, indent=1)

    def credit(self, record: MemberRecord, until: float) -> None:
        """Counts a member's time up to `until` in its pool's usage, day by day."""
        start = max(record.accounted_until, record.started_at)
        days = self.usage.setdefault(record.pool, {})
        while start < until:
            end = min(until, next_midnight(start))
            day = day_of(start)
            days[day] = days.get(day, 0.0) + (end - start)
            start = end
        record.accounted_until = max(record.accounted_until, until)
        for old_day in sorted(days)[:-DAYS_KEPT]:
            days.pop(old_day)

    def used_seconds(self, pool: str, wall: float) -> float:
        """Member-seconds the pool used on the day of `wall`, counted so far."""
        return self.usage.get(pool, {}).get(day_of(wall), 0.0)

    def record_start(self, pool: str, wall: float) -> None:
        self.starts[pool] = [*self.recent_starts(pool, wall), wall]

    def recent_starts(self, pool: str, wall: float) -> list[float]:
        """Wall times of the pool's starts in the last 10 minutes."""
        return [at for at in self.starts.get(pool, []) if wall - at < RATE_WINDOW_SECONDS]


def write_private(path: Path, text: str) -> None:
    """Writes a file readable by its owner only, atomically (blocking)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as file:
            file.write(text)
            file.flush()
            os.fsync(file.fileno())
        with contextlib.suppress(OSError):
            os.chmod(temporary, 0o600)  # mkstemp's mode already; said again for filesystems that differ
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
