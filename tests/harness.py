"""Real ComfyUI processes for the integration tests.

Each `ComfyInstance` is a separate `main.py --cpu` process with its own base directory (custom
nodes, input, output, temp, user) and its own sqlite database, so instances sharing one install
never wipe or lock each other. The master gets this extension; workers get only the test node pack.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PROJECT_DIR = Path(__file__).resolve().parent.parent
NODE_PACK_DIR = Path(__file__).resolve().parent / "node_pack"
EXTENSION_NAME = "comfyui-distributed-gpu"


def comfyui_root() -> Path:
    """The ComfyUI install under test: COMFYUI_ROOT, as scripts/env.sh exports it."""
    root = os.environ.get("COMFYUI_ROOT")
    if not root or not (Path(root) / "main.py").is_file():
        raise RuntimeError("COMFYUI_ROOT is not set to a ComfyUI install; run the tests through scripts/test.sh")
    return Path(root)


def comfyui_python() -> str:
    return os.environ.get("COMFYUI_PYTHON") or sys.executable


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(predicate: Callable[[], Any], timeout: float, interval: float = 0.1, message: str = "") -> Any:
    """Polls `predicate` until it returns something truthy, or fails the test at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        _check_deadline(deadline, timeout, message or predicate)
        time.sleep(interval)


async def wait_until_async(predicate: Callable[[], Any], timeout: float, interval: float = 0.05, message: str = "",
                           blocking: bool = False) -> Any:
    """`wait_until` for async tests: the loop keeps running while it waits. A `blocking` predicate
    (HTTP, psutil) is called in a thread."""
    deadline = time.monotonic() + timeout
    while True:
        value = await asyncio.to_thread(predicate) if blocking else predicate()
        if value:
            return value
        _check_deadline(deadline, timeout, message or predicate)
        await asyncio.sleep(interval)


def _check_deadline(deadline: float, timeout: float, waiting_for: object) -> None:
    if time.monotonic() > deadline:
        raise AssertionError(f"timed out after {timeout:g}s waiting for {waiting_for}")


def http_json(method: str, url: str, body: Any = None, headers: dict[str, str] | None = None, timeout: float = 30) -> tuple[int, Any]:
    """One HTTP request; returns (status, parsed JSON or text). Never raises on HTTP errors."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            status, raw = response.status, response.read()
    except urllib.error.HTTPError as error:
        status, raw = error.code, error.read()
    try:
        return status, json.loads(raw) if raw else None
    except ValueError:
        return status, raw.decode(errors="replace")


@dataclass
class ComfyInstance:
    """One ComfyUI process. `start()` returns at once; `wait_ready()` waits for /system_stats."""

    name: str
    base_dir: Path
    port: int = field(default_factory=free_port)
    with_extension: bool = False
    with_node_pack: bool = True
    env: dict[str, str] = field(default_factory=dict)
    extra_args: list[str] = field(default_factory=list)
    ready_path: str = "/system_stats"
    """What answers 200 once it is up (a worker locked with a token answers only /distributed/alive)."""
    process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.base_dir / "comfyui.log"

    @property
    def output_dir(self) -> Path:
        return self.base_dir / "output"

    @property
    def input_dir(self) -> Path:
        return self.base_dir / "input"

    def prepare(self) -> None:
        custom_nodes = self.base_dir / "custom_nodes"
        custom_nodes.mkdir(parents=True, exist_ok=True)
        for sub in ("input", "output", "temp", "user/default", "models"):
            (self.base_dir / sub).mkdir(parents=True, exist_ok=True)
        settings = self.base_dir / "user/default/comfy.settings.json"
        if not settings.exists():
            settings.write_text(json.dumps({"Comfy.TutorialCompleted": True}))
        links = {}
        if self.with_extension:
            links[EXTENSION_NAME] = PROJECT_DIR
        if self.with_node_pack:
            links["distributed_test_nodes"] = NODE_PACK_DIR
        for link_name, target in links.items():
            link = custom_nodes / link_name
            if not link.exists():
                link.symlink_to(target, target_is_directory=True)

    def command(self) -> list[str]:
        return [
            comfyui_python(), "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(self.port),
            "--disable-auto-launch", "--base-directory", str(self.base_dir),
            "--database-url", f"sqlite:///{self.base_dir / 'user' / 'comfyui.db'}",
            *self.extra_args,
        ]

    def start(self) -> ComfyInstance:
        self.prepare()
        # One torch thread each: several instances share this machine's cores, and oversubscribed
        # thread pools make every instance many times slower than one thread each.
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1", **self.env}
        log = open(self.log_path, "ab")
        self.process = subprocess.Popen(
            self.command(), cwd=comfyui_root(), env=env, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        return self

    def is_ready(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            raise AssertionError(f"{self.name} exited with {self.process.returncode}:\n{self.log_tail()}")
        try:
            with urllib.request.urlopen(self.url + self.ready_path, timeout=2) as response:
                return response.status == 200
        except (OSError, urllib.error.URLError):
            return False

    def wait_ready(self, timeout: float = 120) -> ComfyInstance:
        try:
            wait_until(self.is_ready, timeout, interval=0.25, message=f"{self.name} to answer {self.ready_path}")
        except AssertionError as error:
            raise AssertionError(f"{error}\n--- {self.name} log ---\n{self.log_tail()}") from None
        return self

    def log_tail(self, lines: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def signal(self, signum: int) -> None:
        assert self.process is not None
        os.kill(self.process.pid, signum)

    def stop(self, timeout: float = 10) -> None:
        """terminate -> wait -> kill; safe to call twice."""
        if self.process is None or self.process.poll() is not None:
            return
        try:
            os.kill(self.process.pid, signal.SIGCONT)
        except OSError:
            pass
        self.process.terminate()
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout)

    def kill(self) -> None:
        assert self.process is not None
        self.process.kill()
        self.process.wait(10)

    def get(self, path: str, **kwargs: Any) -> tuple[int, Any]:
        return http_json("GET", self.url + path, **kwargs)

    def post(self, path: str, body: Any = None, **kwargs: Any) -> tuple[int, Any]:
        return http_json("POST", self.url + path, body, **kwargs)

    def queue_prompt(self, prompt: dict, **extra: Any) -> str:
        status, body = self.post("/prompt", {"prompt": prompt, **extra})
        assert status == 200, f"/prompt answered {status}: {body}"
        return body["prompt_id"]

    def wait_history(self, prompt_id: str, timeout: float = 120) -> dict:
        """Waits until the prompt is finished (success or error) and returns its history entry."""

        def finished() -> dict | None:
            status, body = self.get(f"/history/{prompt_id}")
            entry = body.get(prompt_id) if status == 200 and isinstance(body, dict) else None
            if entry and entry.get("status", {}).get("completed") is not None and entry["status"].get("status_str"):
                return entry
            return None

        try:
            return wait_until(finished, timeout, interval=0.2, message=f"prompt {prompt_id} on {self.name}")
        except AssertionError as error:
            raise AssertionError(f"{error}\n--- {self.name} log ---\n{self.log_tail()}") from None


@contextmanager
def running(*instances: ComfyInstance) -> Iterator[None]:
    """Starts the instances side by side, waits until each answers, and stops them all at the end."""
    for instance in instances:
        instance.start()
    try:
        for instance in instances:
            instance.wait_ready()
        yield
    finally:
        for instance in instances:
            instance.stop()


def reset_dir(path: Path) -> Path:
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path
