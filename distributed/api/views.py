"""What the API shows of the registry: the configuration plus each worker's live status.

Answers and the `registry_changed` event share this one rendering, so the panel sees the same
shape whichever way a change reaches it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..config.models import RegistryFile, WorkerConfig
from ..config.registry import Registry
from ..config.secrets import public_url, public_view


class RegistryViews:
    """Renders the registry with what the other services know of each worker."""

    def __init__(
        self,
        registry: Registry,
        status_json: Callable[[str], dict[str, Any]],
        relative_speed: Callable[[str], float | None],
        result_link: Callable[[str], dict[str, Any] | None],
        master_device: Callable[[], dict[str, str]] = dict,
        hosts: Callable[[], dict[str, Any]] = dict,
    ) -> None:
        """`hosts`: what this master knows of each of its hosts (GPUs, workers), by host id."""
        self._registry = registry
        self._hosts = hosts
        self._master_device = master_device
        self._status_json = status_json
        self._relative_speed = relative_speed
        self._result_link = result_link

    def snapshot(self) -> dict[str, Any]:
        """GET /distributed/workers: the configuration plus each worker's live status."""
        config: RegistryFile = self._registry.snapshot()
        body = config.model_dump(mode="json", exclude={"workers"})
        body["registry_error"] = self._registry.error
        body["registry_path"] = str(self._registry.path)
        body["master_device"] = self._master_device()
        body["workers"] = [self._worker_view(worker) for worker in config.workers]
        body["hosts"] = self._hosts()
        return body

    def worker_snapshot(self, worker_id: str) -> dict[str, Any]:
        return self._worker_view(self._registry.worker(worker_id))

    def _worker_view(self, worker: WorkerConfig) -> dict[str, Any]:
        return {**public_view(worker), "base_url": public_url(worker.base_url), "status": self._status_json(worker.id),
                "relative_speed": self._relative_speed(worker.id), "result_link": self._result_link(worker.id)}
