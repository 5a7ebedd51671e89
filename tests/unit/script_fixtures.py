"""A local HTTP server for model files and a git-hosted node pack: what a set-up script reaches for,
without the internet."""

from __future__ import annotations

import functools
import shutil
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


class QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@contextmanager
def file_server(folder: Path) -> Iterator[str]:
    """Serves `folder` on a free local port; yields its base URL."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(QuietHandler, directory=str(folder)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def git(*args: str, cwd: Path | None = None) -> str:
    done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=True,
                          env={"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com", "GIT_COMMITTER_NAME": "t",
                               "GIT_COMMITTER_EMAIL": "t@example.com", "HOME": str(cwd or Path.cwd()), "PATH": "/usr/bin:/bin",
                               "GIT_CONFIG_NOSYSTEM": "1"})
    return done.stdout.strip()


@dataclass(frozen=True)
class HostedPack:
    origin: Path
    """A bare repository standing in for the pack's public remote."""
    checkout: Path
    """The master's clone of it, as it sits in custom_nodes."""
    commit: str


def hosted_pack(root: Path, source: Path, name: str) -> HostedPack:
    """`source`'s files committed to a bare 'remote' and cloned to root/custom_nodes/<name>."""
    work = root / "pack-work"
    shutil.copytree(source, work, ignore=shutil.ignore_patterns("__pycache__"))
    git("init", "-q", "-b", "main", cwd=work)
    git("add", "-A", cwd=work)
    git("commit", "-q", "-m", "pack", cwd=work)
    origin = root / "origin" / f"{name}.git"
    origin.parent.mkdir(parents=True, exist_ok=True)
    git("clone", "-q", "--bare", str(work), str(origin))
    checkout = root / "custom_nodes" / name
    checkout.parent.mkdir(parents=True, exist_ok=True)
    git("clone", "-q", str(origin), str(checkout))
    return HostedPack(origin, checkout, git("rev-parse", "HEAD", cwd=checkout))
