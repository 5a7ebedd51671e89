"""The test start command of an elastic pool: a real CPU ComfyUI (the test node pack, no extension)
on a free port, left running on its own; its PID is recorded for stop_member.py.

    start_member.py --dir DIR [--mode ok|fail|no-line|dead-url]

`DISTRIBUTED_MEMBER_ID` names the member. Modes other than `ok` start nothing and fail the way a
broken start command would: `fail` exits 3 with a message on stderr, `no-line` exits 0 without an
address, `dead-url` prints an address where nothing answers. Every start is logged to DIR/events.log;
the member's PID is in DIR/<member>.json until it is stopped, and in DIR/<member>.pid for good.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.harness import ComfyInstance, free_port


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--dir", type=Path, required=True)
    parser.add_argument("--mode", choices=("ok", "fail", "no-line", "dead-url"), default="ok")
    args = parser.parse_args()
    member_id = os.environ["DISTRIBUTED_MEMBER_ID"]
    args.dir.mkdir(parents=True, exist_ok=True)
    with (args.dir / "events.log").open("a") as log:
        log.write(f"start {member_id} {args.mode}\n")
    print(f"starting member {member_id} ({args.mode})", flush=True)
    if args.mode == "fail":
        print("cannot create the member: quota exceeded", file=sys.stderr, flush=True)
        return 3
    if args.mode == "no-line":
        return 0
    if args.mode == "dead-url":
        print(json.dumps({"url": f"http://127.0.0.1:{free_port()}"}), flush=True)
        return 0
    instance = ComfyInstance(member_id, args.dir / member_id).start()
    assert instance.process is not None
    (args.dir / f"{member_id}.json").write_text(json.dumps({"pid": instance.process.pid, "port": instance.port}))
    (args.dir / f"{member_id}.pid").write_text(str(instance.process.pid))  # kept after the stop, for the tests
    print(json.dumps({"url": instance.url}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
