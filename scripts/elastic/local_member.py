"""An example start and stop command for an elastic pool: one ComfyUI on this machine behind
member_watchdog.py, so that it stops itself when its master is gone for good (docs/elastic-workers.md).

    local_member.py start --comfyui /opt/ComfyUI [--python PY] [--state-dir DIR] [--listen 127.0.0.1]
                          [--url-host HOST] [--require-control-within 600] [--on-expiry JSON]
                          [-- EXTRA COMFYUI ARGUMENTS]
    local_member.py stop [--state-dir DIR]

Both read the member's id from DISTRIBUTED_MEMBER_ID, as the pool sets it. `start` picks two free
ports, launches the watchdog (which launches ComfyUI) in a session of its own, records its PID in
the state folder, prints the member's address as one JSON line, and exits: the member keeps running.
`stop` ends the watchdog and ComfyUI by the recorded PID; stopping a member that is not running
succeeds. Only the standard library is used.

As a pool in workers.json:

    "start_command": ["python3", "/path/to/local_member.py", "start", "--comfyui", "/opt/ComfyUI", "--", "--cpu"],
    "stop_command": ["python3", "/path/to/local_member.py", "stop"]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

WATCHDOG = Path(__file__).resolve().parent / "member_watchdog.py"
DEFAULT_STATE = Path.home() / ".local" / "state" / "comfyui-elastic-members"


def free_port(host: str) -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def start(args: argparse.Namespace, member_id: str, extra: list[str]) -> int:
    proxy_port, comfy_port = free_port(args.listen), free_port("127.0.0.1")
    folder = args.state_dir / member_id
    (folder / "custom_nodes").mkdir(parents=True, exist_ok=True)  # ComfyUI's --base-directory needs it
    comfy = [args.python, str(args.comfyui / "main.py"), "--listen", "127.0.0.1", "--port", str(comfy_port),
             "--base-directory", str(folder), *extra]
    command = [args.python, str(WATCHDOG), "--listen", args.listen, "--port", str(proxy_port),
               "--upstream", f"http://127.0.0.1:{comfy_port}", "--require-control-within", str(args.require_control_within),
               *(["--on-expiry", args.on_expiry] if args.on_expiry else []), "--", *comfy]
    options = {"start_new_session": True} if os.name == "posix" else {"creationflags": subprocess.CREATE_NEW_PROCESS_GROUP}
    with (folder / "member.log").open("ab") as log:
        process = subprocess.Popen(command, cwd=args.comfyui, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, **options)
    (args.state_dir / f"{member_id}.json").write_text(json.dumps({"pid": process.pid, "port": proxy_port}))
    print(f"started {member_id}: watchdog pid {process.pid}, log {folder / 'member.log'}", file=sys.stderr)
    print(json.dumps({"url": f"http://{args.url_host or args.listen}:{proxy_port}"}), flush=True)
    return 0


def stop(args: argparse.Namespace, member_id: str) -> int:
    record = args.state_dir / f"{member_id}.json"
    if not record.exists():
        print(f"{member_id} is not running here", file=sys.stderr)
        return 0
    pid = json.loads(record.read_text())["pid"]
    try:
        if os.name == "posix":
            os.killpg(pid, signal.SIGTERM)  # the watchdog ends ComfyUI, then itself
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                os.killpg(pid, 0)
                time.sleep(0.2)  # polling the process group's end
            os.killpg(pid, signal.SIGKILL)
        else:
            subprocess.run(["taskkill", "/T", "/F", "/PID", str(pid)], check=False, capture_output=True)
    except ProcessLookupError:
        pass  # gone: stopped
    record.unlink(missing_ok=True)
    print(f"stopped {member_id}", file=sys.stderr)
    return 0


def main(argv: list[str]) -> int:
    extra: list[str] = []
    if "--" in argv:
        split = argv.index("--")
        argv, extra = argv[:split], argv[split + 1:]
    parser = argparse.ArgumentParser(prog="local_member.py")
    parser.add_argument("action", choices=("start", "stop"))
    parser.add_argument("--comfyui", type=Path, help="ComfyUI's folder (the one holding main.py); start only")
    parser.add_argument("--python", default=sys.executable, help="the interpreter that runs ComfyUI")
    parser.add_argument("--state-dir", type=Path, default=DEFAULT_STATE)
    parser.add_argument("--listen", default="127.0.0.1", help="address the master reaches the member on")
    parser.add_argument("--url-host", default=None, help="host name the master uses (default: --listen)")
    parser.add_argument("--require-control-within", type=float, default=600.0)
    parser.add_argument("--on-expiry", default=None, help="passed to member_watchdog.py: a JSON argument list")
    args = parser.parse_args(argv)
    member_id = os.environ.get("DISTRIBUTED_MEMBER_ID")
    if not member_id:
        parser.error("DISTRIBUTED_MEMBER_ID is not set (the pool sets it)")
    args.state_dir.mkdir(parents=True, exist_ok=True)
    if args.action == "stop":
        return stop(args, member_id)
    if args.comfyui is None or not (args.comfyui / "main.py").is_file():
        parser.error("--comfyui must name ComfyUI's folder")
    return start(args, member_id, extra)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
