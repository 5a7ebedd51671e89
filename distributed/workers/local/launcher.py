"""Entry point of a local worker: a lease watchdog, then ComfyUI's main.py in this same process.

Run as a script path, never `-m`, so that it works from wherever the extension sits in custom_nodes:

    python launcher.py --lease=LEASE --lease-timeout=15 -- /path/to/ComfyUI/main.py --port 8189 ...

Why a lease and not the master's PID: a worker must not outlive its master, even a master killed
with SIGKILL (no atexit, no signal handler runs), yet a master that restarts should find its workers
still running and adopt them. The master rewrites the lease file every few seconds (pid, timestamp,
atomically). This watchdog only notices whether the content changes: after `--lease-timeout` seconds
without a change it ends the process with os._exit. A restarted master simply resumes writing the
lease. A lease marked `"hold": true` (written by a master that exits cleanly with
stop_workers_on_exit off) suspends the deadline until a master writes a normal lease again.

Only the standard library is used, and only calls that exist on Windows too.
"""

from __future__ import annotations

import argparse
import json
import os
import runpy
import sys
import threading
import time
from pathlib import Path

EXIT_LEASE_EXPIRED = 3


def _read_lease(path: Path) -> dict | None:
    try:
        lease = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return lease if isinstance(lease, dict) else None


def watch_lease(path: Path, timeout: float, interval: float) -> None:
    """Ends the process when the lease has not changed for `timeout` seconds (monotonic clock)."""
    last_lease: dict | None = None
    fresh_at = time.monotonic()
    while True:
        lease = _read_lease(path)
        now = time.monotonic()
        if lease is not None and (lease.get("hold") or lease != last_lease):
            last_lease = lease
            fresh_at = now
        if now - fresh_at > timeout:
            sys.__stderr__.write(
                f"[distributed] master lease {path} not refreshed for {timeout:.0f}s: the master is gone, exiting\n"
            )
            sys.__stderr__.flush()
            os._exit(EXIT_LEASE_EXPIRED)
        time.sleep(interval)


def _parse(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    if "--" not in argv:
        raise SystemExit("usage: launcher.py [--lease PATH --lease-timeout S] -- MAIN_PY [COMFYUI ARGS...]")
    split = argv.index("--")
    parser = argparse.ArgumentParser(prog="launcher.py")
    parser.add_argument("--lease", type=Path, default=None, help="lease file the master keeps refreshing")
    parser.add_argument("--lease-timeout", type=float, default=15.0, help="seconds without a refresh before exiting")
    parser.add_argument("--lease-poll", type=float, default=0.5, help="seconds between two reads of the lease")
    own = parser.parse_args(argv[:split])
    comfy = argv[split + 1:]
    if not comfy:
        raise SystemExit("launcher.py: no main.py given after --")
    return own, comfy


def main(argv: list[str]) -> None:
    own, comfy = _parse(argv)
    if own.lease is not None:
        threading.Thread(
            target=watch_lease, args=(own.lease, own.lease_timeout, own.lease_poll), name="distributed-lease-watchdog", daemon=True
        ).start()
    main_py = Path(comfy[0]).resolve()
    # ComfyUI imports its modules from its own folder; this file's folder (the extension's package)
    # must not shadow them, so it is replaced rather than kept first on the path.
    sys.path[0] = str(main_py.parent)
    sys.argv = [str(main_py), *comfy[1:]]
    runpy.run_path(str(main_py), run_name="__main__")


if __name__ == "__main__":
    main(sys.argv[1:])
