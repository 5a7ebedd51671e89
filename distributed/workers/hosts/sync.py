"""The managing master's side of its hosts: it polls each one and keeps the host's workers as its own.

Every enabled host entry is polled on its own timer (GET /distributed/host with the host's token,
through the same capped, deadlined client as any worker; backing off while it fails). Each worker of
the host that listens on the network becomes a managed entry of this registry: a `remote` worker at
the host's address and the worker's port, with the worker's token, `managed_by: "host:<host id>"`.
Health checks, scheduling, failover and the fast path then treat it as any other worker, and the
work goes straight to it. Entries are added, updated and removed as the host changes; the registry
is written only when something changed. A worker that listens on the host's loopback only cannot be
reached from here: it is listed with its host, not made an entry.

While the host says one of its workers is stopped, launching or failed, that word is shown for its
entry (the health monitor's override), as the local fleet does for local workers; once the host says
it runs, its entry is checked at once and health checks speak for it. A host entry itself is shown
as `connected`, `offline` or `error`: never a state that takes work.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from pydantic import ValidationError

from ...config.models import RegistryFile, WorkerConfig
from ...config.registry import Registry
from ...config.validation import describe_validation_error
from ...errors import BadResult, WorkerUnavailable
from ..health import HealthMonitor
from ..pool import ClientPool
from ..status import WorkerState, WorkerStatus
from .report import REPORT_PATH, HostReport, HostWorker

logger = logging.getLogger(__name__)

MANAGER_KIND = "host"
TICK_SECONDS = 0.25
MIN_INTERVAL_SECONDS = 0.5
MAX_BACKOFF_SECONDS = 30.0
MAX_ID_LENGTH = 64
HOST_STATES_SHOWN = {WorkerState.STOPPED: WorkerState.STOPPED, WorkerState.LAUNCHING: WorkerState.LAUNCHING,
                     WorkerState.ERROR: WorkerState.ERROR}
"""What the host says of a worker's process that speaks for its entry here; otherwise health checks do."""


def manager_key(host_id: str) -> str:
    """The `managed_by` of a host's workers."""
    return f"{MANAGER_KIND}:{host_id}"


def managed_id(host_id: str, worker_id: str) -> str:
    """The id of a host's worker in this registry: "<host id>.<worker id>", shortened with a digest when too long."""
    candidate = f"{host_id}.{worker_id}"
    if len(candidate) <= MAX_ID_LENGTH:
        return candidate
    digest = hashlib.sha256(candidate.encode()).hexdigest()[:8]
    return f"{candidate[:MAX_ID_LENGTH - 9]}-{digest}"


def host_address(host: WorkerConfig) -> str:
    """The host's machine, as this master reaches it: its workers listen there on their own ports."""
    return urlsplit(host.base_url).hostname or host.host


def reconcile(config: RegistryFile, host: WorkerConfig, report: HostReport) -> tuple[RegistryFile, list[str]]:
    """The registry with the host's managed entries as its report says, and the problems met.

    Entries keep their place and their `enabled` (the user's choice here); new ones come last. A
    host worker whose id here is taken by a worker of another kind is left out and named.
    """
    key = manager_key(host.id)
    others = {worker.id for worker in config.workers if worker.managed_by != key}
    current = {worker.id: worker for worker in config.workers if worker.managed_by == key}
    wanted: dict[str, WorkerConfig] = {}
    problems: list[str] = []
    for reported in report.workers:
        if reported.listen != "network":
            continue
        entry_id = managed_id(host.id, reported.id)
        if entry_id in others:
            problems.append(f"worker '{reported.name}' is not used here: the id '{entry_id}' belongs to another worker of this master")
            continue
        previous = current.get(entry_id)
        try:
            wanted[entry_id] = WorkerConfig(
                id=entry_id, name=f"{host.name} / {reported.name}"[:100], type="remote", host=host_address(host),
                port=reported.port, auth_token=reported.auth_token, enabled=previous.enabled if previous else True, managed_by=key,
            )
        except ValidationError as error:
            problems.append(f"worker '{reported.name}' is not used here: {describe_validation_error(error)}")
    workers = []
    for worker in config.workers:
        if worker.managed_by != key:
            workers.append(worker)
        elif worker.id in wanted:
            workers.append(wanted.pop(worker.id))
    workers.extend(wanted.values())
    return config.model_copy(update={"workers": workers}), problems


def without_orphans(config: RegistryFile) -> RegistryFile:
    """The registry less the entries of hosts that are gone or disabled (their workers are not used)."""
    live = {manager_key(worker.id) for worker in config.workers if worker.type == "host" and worker.enabled}
    kept = [worker for worker in config.workers
            if not (worker.managed_by or "").startswith(f"{MANAGER_KIND}:") or worker.managed_by in live]
    return config if len(kept) == len(config.workers) else config.model_copy(update={"workers": kept})


@dataclass
class HostView:
    """What this master knows of one host."""

    status: WorkerStatus = field(default_factory=lambda: WorkerStatus(WorkerState.UNKNOWN))
    report: HostReport | None = None
    """The last report the host gave; kept while it cannot be reached, to show what it had."""
    problems: list[str] = field(default_factory=list)
    failures: int = 0

    def as_json(self, host_id: str) -> dict[str, Any]:
        report = self.report or HostReport()
        return {
            "state": self.status.state.value,
            "error": self.status.error,
            "checked_at": self.status.checked_at,
            "gpus": [gpu.model_dump(mode="json") for gpu in report.gpus],
            "gpu_problem": report.gpu_problem,
            "master_gpu": report.master_gpu,
            "workers": [{**worker.model_dump(mode="json", exclude={"auth_token"}),
                         "managed_id": managed_id(host_id, worker.id) if worker.listen == "network" else None}
                        for worker in report.workers],
            "problems": list(self.problems),
        }


class HostSync:
    """Polls the hosts and keeps their workers in the registry; lives on the server loop."""

    def __init__(self, registry: Registry, clients: ClientPool, health: HealthMonitor, on_change: Callable[[], None]) -> None:
        """`on_change` runs when what the panel shows of a host changed (its report, its state)."""
        self._registry = registry
        self._clients = clients
        self._health = health
        self._on_change = on_change
        self._views: dict[str, HostView] = {}
        self._polled_as: dict[str, WorkerConfig] = {}
        self._due: dict[str, float] = {}
        self._polls: dict[str, asyncio.Task[None]] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._host_side: dict[str, dict[str, HostWorker]] = {}
        """Host id -> managed entry id -> what the host said of that worker at its last poll that answered."""
        self._rechecks: set[asyncio.Future] = set()

    # --- what others ask ---------------------------------------------------------------------------

    def snapshot(self) -> dict[str, dict[str, Any]]:
        """Each enabled host's view, by host id, for GET /distributed/workers."""
        return {host_id: view.as_json(host_id) for host_id, view in self._views.items()}

    def view(self, host_id: str) -> dict[str, Any]:
        return self._views.get(host_id, HostView()).as_json(host_id)

    def status_override(self, worker_id: str) -> WorkerStatus | None:
        """A host's own status, and the host's word on a managed worker that is not running."""
        worker = self._registry.snapshot().worker(worker_id)
        if worker is None or not worker.enabled:
            return None
        if worker.type == "host":
            return self._views.get(worker_id, HostView()).status
        host_id = (worker.managed_by or "").removeprefix(f"{MANAGER_KIND}:")
        reported = self._host_side.get(host_id, {}).get(worker_id) if worker.managed_by == manager_key(host_id) else None
        shown = HOST_STATES_SHOWN.get(reported.state) if reported is not None else None
        if shown is None:
            return None
        return WorkerStatus(shown, error=reported.error if shown == WorkerState.ERROR else None)

    # --- polling ------------------------------------------------------------------------------------

    async def run(self) -> None:
        """Polls every enabled host when it is due and drops the entries of hosts gone; runs until cancelled."""
        while True:
            config = self._registry.snapshot()
            hosts = {worker.id: worker for worker in config.workers if worker.type == "host" and worker.enabled}
            for host_id in (set(self._views) | set(self._polls)) - set(hosts):
                self._forget(host_id)
                self._on_change()
            if self._registry.error is None and without_orphans(config) is not config:
                self._registry.update(without_orphans)
            now = time.monotonic()
            for host in hosts.values():
                if self._polled_as.get(host.id, host) != host:
                    self._forget(host.id)  # its address or token changed: what it said no longer holds
                self._polled_as[host.id] = host
                task = self._polls.get(host.id)
                if now >= self._due.get(host.id, 0.0) and (task is None or task.done()):
                    self._polls[host.id] = asyncio.ensure_future(self.refresh(host))
            await asyncio.sleep(TICK_SECONDS)

    async def refresh(self, host: WorkerConfig) -> None:
        """Polls one host now and applies what it says (after an action, so the panel sees its effect)."""
        async with self._locks.setdefault(host.id, asyncio.Lock()):
            report, status = await self._ask(host)
            if self._registry.snapshot().worker(host.id) != host:
                return  # the entry changed or went while the host answered: not an answer about it
            self._apply(host, report, status)

    async def stop(self) -> None:
        tasks = [task for task in self._polls.values() if not task.done()] + list(self._rechecks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _ask(self, host: WorkerConfig) -> tuple[HostReport | None, WorkerStatus]:
        """The host's report and its status; a host that cannot answer usefully gets a status that says why."""
        client = self._clients.client(host)
        try:
            status_code, answer = await client.send("GET", REPORT_PATH)
        except WorkerUnavailable as error:
            state = WorkerState.ERROR if error.stage in ("auth", "tls") or isinstance(error, BadResult) else WorkerState.OFFLINE
            return None, WorkerStatus(state, error=error.cause, checked_at=time.time())
        if status_code != 200:
            return None, WorkerStatus(WorkerState.ERROR, error=self._refusal(status_code, answer), checked_at=time.time())
        try:
            report = HostReport.model_validate(answer)
        except ValidationError as error:
            cause = f"its answer to {REPORT_PATH} is not understood: {describe_validation_error(error)}"
            return None, WorkerStatus(WorkerState.ERROR, error=cause, checked_at=time.time())
        return report, WorkerStatus(WorkerState.CONNECTED, checked_at=time.time())

    @staticmethod
    def _refusal(status_code: int, answer: Any) -> str:
        said = answer.get("error") if isinstance(answer, dict) else None
        said = said[:300] if isinstance(said, str) else f"HTTP {status_code}"
        if status_code == 404:
            return f"{REPORT_PATH} answered 404: this ComfyUI does not run this extension, or a version without hosts"
        if status_code == 401:
            return f"the host refused this entry's token ({said}); give it the host's DISTRIBUTED_API_TOKEN"
        return f"the host refused {REPORT_PATH} ({status_code}: {said})"

    def _apply(self, host: WorkerConfig, report: HostReport | None, status: WorkerStatus) -> None:
        view = self._views.setdefault(host.id, HostView())
        shown_before = self._shown(host.id)
        running_before = {worker_id for worker_id, reported in self._host_side.get(host.id, {}).items() if reported.state.answers}
        before, previous = _comparable(view.as_json(host.id)), view.status
        view.status = status
        if report is None:
            view.failures += 1
            self._host_side.pop(host.id, None)  # it cannot speak for its workers now: their health checks do
        else:
            view.failures = 0
            view.report = report
            view.problems = self._write_entries(host, report)
            self._host_side[host.id] = {managed_id(host.id, reported.id): reported for reported in report.workers}
        self._due[host.id] = time.monotonic() + self._interval(view.failures)
        if (status.state, status.error) != (previous.state, previous.error):
            if status.error:
                logger.info("Host %s is %s: %s", host.name, status.state.value, status.error)
            else:
                logger.info("Host %s is %s", host.name, status.state.value)
            self._health.publish(host.id)
        self._publish_entries(host.id, shown_before, running_before)
        if _comparable(view.as_json(host.id)) != before:
            self._on_change()

    def _write_entries(self, host: WorkerConfig, report: HostReport) -> list[str]:
        """Brings the host's managed entries in line with its report; writes the registry only on a change."""
        if self._registry.error is not None:
            return [f"this master's {self._registry.path.name} is invalid, so the host's workers are not updated here"]
        config = self._registry.snapshot()
        proposed, problems = reconcile(config, host, report)
        if proposed.workers != config.workers:
            self._registry.update(lambda current: reconcile(current, host, report)[0])
            logger.info("Host %s: its workers here are now %s", host.name,
                        ", ".join(w.id for w in proposed.workers if w.managed_by == manager_key(host.id)) or "none")
        return problems

    def _shown(self, host_id: str) -> dict[str, WorkerStatus | None]:
        key = manager_key(host_id)
        return {worker.id: self.status_override(worker.id) for worker in self._registry.snapshot().workers if worker.managed_by == key}

    def _publish_entries(self, host_id: str, shown_before: dict[str, WorkerStatus | None], running_before: set[str]) -> None:
        """Pushes every entry whose shown status changed; an entry whose worker now runs is checked at once."""
        config = self._registry.snapshot()
        for worker_id, shown in self._shown(host_id).items():
            if shown != shown_before.get(worker_id):
                self._health.publish(worker_id)
            reported = self._host_side.get(host_id, {}).get(worker_id)
            entry = config.worker(worker_id)
            if reported is not None and reported.state.answers and worker_id not in running_before and entry is not None \
                    and entry.enabled:
                recheck = self._health.recheck(entry)  # now, not at its next backed-off check
                self._rechecks.add(recheck)
                recheck.add_done_callback(self._rechecks.discard)

    def _interval(self, failures: int) -> float:
        interval = max(self._registry.snapshot().settings.health_interval, MIN_INTERVAL_SECONDS)
        return min(interval * 2 ** min(failures, 8), MAX_BACKOFF_SECONDS) if failures else interval

    def _forget(self, host_id: str) -> None:
        self._views.pop(host_id, None)
        self._due.pop(host_id, None)
        self._host_side.pop(host_id, None)
        self._polled_as.pop(host_id, None)
        task = self._polls.pop(host_id, None)
        if task is not None:
            task.cancel()


def _comparable(view: dict[str, Any]) -> dict[str, Any]:
    """A host's view less the time of its last poll: what a change to show is judged by."""
    return {key: value for key, value in view.items() if key != "checked_at"}
