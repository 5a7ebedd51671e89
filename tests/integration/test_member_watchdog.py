"""The example start script of an elastic pool's member (scripts/elastic/local_member.py): a real
ComfyUI behind the watchdog proxy, reachable through it, and gone once nothing controls it."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
from pathlib import Path

import aiohttp
import psutil

from tests.conftest import OUTPUT_ROOT
from tests.harness import comfyui_python, comfyui_root, http_json, reset_dir, wait_until

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "elastic" / "local_member.py"


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


async def first_websocket_message(url: str) -> dict:
    async with aiohttp.ClientSession() as session, session.ws_connect(f"{url.replace('http', 'ws', 1)}/ws?clientId=watchdog-test") as ws:
        message = await asyncio.wait_for(ws.receive(), 30)
        return json.loads(message.data)


def test_a_member_behind_the_watchdog_serves_through_it_and_stops_itself_without_control() -> None:
    base = reset_dir(OUTPUT_ROOT / "member-watchdog")
    env = {**os.environ, "DISTRIBUTED_MEMBER_ID": "watched-1", "OMP_NUM_THREADS": "1"}
    expired = base / "expired"
    on_expiry = json.dumps([comfyui_python(), "-c", f"open({str(expired)!r}, 'w').close()"])
    started = subprocess.run(
        [comfyui_python(), str(SCRIPT), "start", "--comfyui", str(comfyui_root()), "--python", comfyui_python(),
         "--state-dir", str(base), "--require-control-within", "8", "--on-expiry", on_expiry,
         "--", "--cpu", "--disable-auto-launch", "--database-url", f"sqlite:///{base / 'comfyui.db'}"],
        env=env, capture_output=True, text=True, timeout=60, check=True,
    )
    url = json.loads(started.stdout.strip().splitlines()[-1])["url"]
    watchdog_pid = json.loads((base / "watched-1.json").read_text())["pid"]
    log = base / "watched-1" / "member.log"
    try:
        def answers() -> bool:  # each try through the proxy is control, so the member lives while it boots
            assert alive(watchdog_pid), f"the member ended while starting:\n{log.read_text()[-3000:]}"
            try:
                status, body = http_json("GET", f"{url}/system_stats", timeout=2)
            except OSError:
                return False
            return status == 200 and "system" in body

        wait_until(answers, 180, interval=0.5, message="ComfyUI to answer through the watchdog")
        message = asyncio.run(first_websocket_message(url))
        comfy_pid = int(re.search(r"ComfyUI started \(pid (\d+)\)", log.read_text()).group(1))

        assert message["type"] == "status"
        wait_until(lambda: not alive(watchdog_pid), 60, interval=0.25, message="the watchdog to stop the uncontrolled member")
        assert not alive(comfy_pid)
        assert "the master is gone, stopping this member" in log.read_text()
        wait_until(expired.exists, 10, message="the --on-expiry command to run")
    finally:
        subprocess.run([comfyui_python(), str(SCRIPT), "stop", "--state-dir", str(base)], env=env, timeout=60, check=False)
