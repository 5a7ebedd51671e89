"""The test stop command of an elastic pool: ends the ComfyUI that start_member.py launched for the
member named by `DISTRIBUTED_MEMBER_ID` (a stopped one is continued first), by its recorded PID.

    stop_member.py --dir DIR

Stopping a member that is not running succeeds, as a real stop command should. Every stop is
logged to DIR/events.log.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
from pathlib import Path

import psutil


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--dir", type=Path, required=True)
    args = parser.parse_args()
    member_id = os.environ["DISTRIBUTED_MEMBER_ID"]
    record = args.dir / f"{member_id}.json"
    if record.exists():
        pid = json.loads(record.read_text())["pid"]
        with contextlib.suppress(psutil.NoSuchProcess):
            process = psutil.Process(pid)
            process.send_signal(signal.SIGCONT)
            process.terminate()
            try:
                process.wait(15)
            except psutil.TimeoutExpired:
                process.kill()
                process.wait(15)
        record.unlink()
    with (args.dir / "events.log").open("a") as log:
        log.write(f"stop {member_id}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
