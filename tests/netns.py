"""A worker ComfyUI behind a slow link: its own network namespace, joined by a veth pair and shaped.

Used by the slow-link test and the capped-link benchmark. Needs root and iproute2; where the machine
forbids namespaces, `capped_link` raises `LinkUnavailable` saying why.
"""

from __future__ import annotations

import shutil
import subprocess
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

from tests.harness import ComfyInstance


class LinkUnavailable(Exception):
    """This machine cannot make the namespace or shape its link (the reason is the message)."""


class NamespacedWorker(ComfyInstance):
    """A worker ComfyUI started inside a network namespace, listening on its veth address."""

    namespace: str = ""
    address: str = ""

    @property
    def url(self) -> str:
        return f"http://{self.address}:{self.port}"

    def command(self) -> list[str]:
        command = super().command()
        command[command.index("--listen") + 1] = self.address
        return ["ip", "netns", "exec", self.namespace, *command]


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30, check=check)


@contextmanager
def capped_link(number: int, rate: str, delay_ms: int | None = None) -> Iterator[tuple[str, str]]:
    """A namespace whose outgoing traffic is capped at `rate` (and delayed, where `tc netem` exists).

    Yields (namespace, worker address); `number` (1..250) keeps parallel users apart. A kernel
    without netem gets the bandwidth cap alone (`tbf`), with a warning when a delay was asked for.
    """
    if shutil.which("ip") is None or shutil.which("tc") is None:
        raise LinkUnavailable("iproute2 (ip, tc) is not installed")
    namespace, host_side, worker_side = f"distnet{number}", f"dn{number}h", f"dn{number}w"
    host_address, worker_address = f"10.231.{number}.1", f"10.231.{number}.2"
    created = ip("netns", "add", namespace, check=False)
    if created.returncode != 0:
        raise LinkUnavailable(f"this machine forbids network namespaces: `ip netns add` said {created.stderr.strip()!r}")
    try:
        ip("link", "add", host_side, "type", "veth", "peer", "name", worker_side)
        ip("link", "set", worker_side, "netns", namespace)
        ip("addr", "add", f"{host_address}/24", "dev", host_side)
        ip("link", "set", host_side, "up")
        inside = ["netns", "exec", namespace, "ip"]
        ip(*inside, "addr", "add", f"{worker_address}/24", "dev", worker_side)
        ip(*inside, "link", "set", worker_side, "up")
        ip(*inside, "link", "set", "lo", "up")
        tc = ["ip", "netns", "exec", namespace, "tc", "qdisc", "add", "dev", worker_side, "root"]
        netem = None
        if delay_ms is not None:
            netem = subprocess.run([*tc, "netem", "delay", f"{delay_ms}ms", "rate", rate], capture_output=True, text=True, timeout=30)
            if netem.returncode != 0:
                warnings.warn(f"tc netem is unavailable here ({netem.stderr.strip()}); the link is capped by tbf without added delay",
                              stacklevel=3)
        if netem is None or netem.returncode != 0:
            subprocess.run([*tc, "tbf", "rate", rate, "burst", "64kb", "latency", "500ms"], capture_output=True, text=True,
                           timeout=30, check=True)
        yield namespace, worker_address
    finally:
        ip("link", "del", host_side, check=False)
        ip("netns", "del", namespace, check=False)
