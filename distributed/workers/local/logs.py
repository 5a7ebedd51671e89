"""A local worker's log file: its tail for the panel, and rotation while the worker keeps writing."""

from __future__ import annotations

import os
import shutil
from pathlib import Path


def read_log_tail(path: Path, lines: int) -> list[str]:
    """The last `lines` lines of a log file, reading only its end."""
    try:
        with path.open("rb") as log:
            log.seek(0, os.SEEK_END)
            size = log.tell()
            block = 8192
            data = b""
            while size > 0 and data.count(b"\n") <= lines:
                step = min(block, size)
                size -= step
                log.seek(size)
                data = log.read(step) + data
                block *= 2
    except OSError:
        return []
    return data.decode(errors="replace").splitlines()[-lines:]


def rotate_log(path: Path, backups: int) -> None:
    """Copies the log to .1 (shifting older ones) and empties it in place.

    Copy-then-truncate because the worker keeps writing to its open file: it was opened for
    appending, so its next write lands at the new end.
    """
    for index in range(backups - 1, 0, -1):
        older = path.with_name(f"{path.name}.{index}")
        if older.exists():
            os.replace(older, path.with_name(f"{path.name}.{index + 1}"))
    shutil.copyfile(path, path.with_name(f"{path.name}.1"))
    with path.open("r+b") as log:
        log.truncate(0)
