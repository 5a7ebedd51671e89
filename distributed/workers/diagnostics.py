"""Questions a user asks about one worker from the panel: does it answer (and, for a host, will it
serve as one), and what does its log say."""

from __future__ import annotations

from typing import Any

from ..config.models import WorkerConfig
from ..config.secrets import public_url
from ..errors import WorkerOffline, WorkerUnavailable
from .client import WorkerClient
from .hosts.report import REPORT_PATH
from .pool import ClientPool


async def test_connection(worker: WorkerConfig) -> dict[str, Any]:
    """Checks a worker through the master and says exactly which step failed.

    Uses a pool of its own, so unsaved settings never replace the session of a saved worker.
    """
    pool = ClientPool()
    try:
        client = pool.client(worker)
        stats = await client.system_stats()
        version = (stats.get("system") or {}).get("comfyui_version", "unknown")
        if worker.type == "host":
            refusal = await host_refusal(client)
            if refusal is not None:
                return refusal
        return {"ok": True, "stage": "ok", "message": f"ComfyUI {version} answers at {public_url(worker.base_url)}"}
    except WorkerUnavailable as error:
        return {"ok": False, "stage": error.stage, "message": error.cause}
    finally:
        await pool.close()


async def host_refusal(client: WorkerClient) -> dict[str, Any] | None:
    """Why a host's ComfyUI, which answers, will not serve this master as a host (no extension, the
    token refused), as a failed test's answer; None when it will."""
    status, answer = await client.send("GET", REPORT_PATH)
    if status == 200:
        return None
    if status == 404:
        return {"ok": False, "stage": "not_comfyui",
                "message": "ComfyUI answers, but without this extension (or a version without hosts) to act as a host"}
    said = answer.get("error") if isinstance(answer, dict) and isinstance(answer.get("error"), str) else f"HTTP {status}"
    stage = "auth" if status in (401, 403) else "http"
    return {"ok": False, "stage": stage, "message": f"the host refused {REPORT_PATH}: {said[:300]}"}


async def remote_log_tail(client: WorkerClient, lines: int) -> list[str]:
    """The tail of a remote worker's log, from its ComfyUI's own log route."""
    try:
        answer = await client.get_json("/internal/logs/raw")
    except WorkerUnavailable as error:
        raise WorkerOffline(client.name, f"could not read its log: {error.cause}", stage=error.stage) from None
    entries = answer.get("entries", []) if isinstance(answer, dict) else []
    text = "".join(str(entry.get("m", "")) for entry in entries if isinstance(entry, dict))
    return text.splitlines()[-lines:]
