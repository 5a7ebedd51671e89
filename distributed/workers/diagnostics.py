"""Questions a user asks about one worker from the panel: does it answer, and what does its log say."""

from __future__ import annotations

from typing import Any

from ..config.models import WorkerConfig
from ..config.secrets import public_url
from ..errors import WorkerOffline, WorkerUnavailable
from .client import WorkerClient
from .pool import ClientPool


async def test_connection(worker: WorkerConfig) -> dict[str, Any]:
    """Checks a worker through the master and says exactly which step failed.

    Uses a pool of its own, so unsaved settings never replace the session of a saved worker.
    """
    pool = ClientPool()
    try:
        stats = await pool.client(worker).system_stats()
        version = (stats.get("system") or {}).get("comfyui_version", "unknown")
        return {"ok": True, "stage": "ok", "message": f"ComfyUI {version} answers at {public_url(worker.base_url)}"}
    except WorkerUnavailable as error:
        return {"ok": False, "stage": error.stage, "message": error.cause}
    finally:
        await pool.close()


async def remote_log_tail(client: WorkerClient, lines: int) -> list[str]:
    """The tail of a remote worker's log, from its ComfyUI's own log route."""
    try:
        answer = await client.get_json("/internal/logs/raw")
    except WorkerUnavailable as error:
        raise WorkerOffline(client.name, f"could not read its log: {error.cause}", stage=error.stage) from None
    entries = answer.get("entries", []) if isinstance(answer, dict) else []
    text = "".join(str(entry.get("m", "")) for entry in entries if isinstance(entry, dict))
    return text.splitlines()[-lines:]
