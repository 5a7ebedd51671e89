"""Knows, at every moment, which workers can take work: the master polls them itself.

No browser ever calls a worker (so no CORS opening anywhere). Each enabled worker is checked on its
own timer, concurrently, so one frozen worker never delays the others; a worker that stays offline is
checked less and less often, up to every 30 s. A host is not checked here: it takes no work, and its
own sync (workers/hosts/sync.py) polls it and speaks for it. A worker whose answers are not ComfyUI's (malformed,
too large, nested too deep) is shown in "error" with the reason, and checked with the same backoff.
A status changes only through `set_status`, which logs and publishes only real changes, so a worker
that stays offline is reported once. A change of the registry takes effect on the statuses at once
(`_sync`), before anything renders the change: an answer or event that reports a worker disabled
already shows it disabled.

An address that answers with this master's own id (`WorkerClient.master_id`) is the master itself,
typed in as a worker by mistake: it is shown in error and never given work.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from ..config.models import RegistryFile, WorkerConfig
from ..config.registry import Registry
from ..errors import BadResult, WorkerUnavailable
from ..events import Events, Revisions
from .pool import ClientPool
from .status import WorkerState, WorkerStatus

logger = logging.getLogger(__name__)

MAX_BACKOFF_SECONDS = 30.0
PROBE_READ_TIMEOUT = 5.0
TICK_SECONDS = 0.25
SELF_ERROR = "this address is this master itself (it answers with the master's own id); a worker must be another ComfyUI"
ERROR_STAGES = ("auth", "tls")
TEXT_LIMIT = 200
MAX_DEVICES = 64

StatusOverride = Callable[[str], WorkerStatus | None]


def _devices(stats: dict) -> tuple[dict, ...]:
    """The devices of a /system_stats answer, reduced to what the panel shows."""
    devices = stats.get("devices")
    if not isinstance(devices, list):
        return ()
    return tuple({"name": _text(device.get("name")), "type": _text(device.get("type")), "index": _number(device.get("index")),
                  "vram_total": _number(device.get("vram_total")), "vram_free": _number(device.get("vram_free"))}
                 for device in devices[:MAX_DEVICES] if isinstance(device, dict))


def _text(value: object) -> str | None:
    """A text field of a worker's answer, as shown: a string, cut to a sane length, or nothing."""
    return value[:TEXT_LIMIT] if isinstance(value, str) else None


def _number(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def _answering(stats: dict[str, Any], queue: int, round_trip_ms: float) -> WorkerStatus:
    """The status of a worker that answered both checks."""
    devices = _devices(stats)
    first = devices[0] if devices else {}
    system = stats.get("system") if isinstance(stats.get("system"), dict) else {}
    return WorkerStatus(
        WorkerState.BUSY if queue > 0 else WorkerState.ONLINE,
        queue_remaining=queue,
        device_name=first.get("name"),
        vram_total=first.get("vram_total"),
        vram_free=first.get("vram_free"),
        comfyui_version=_text(system.get("comfyui_version")),
        checked_at=time.time(),
        os=_text(system.get("os")),
        round_trip_ms=round(round_trip_ms, 1),
        devices=devices,
    )


def _reportable(status: WorkerStatus) -> tuple:
    return (status.state, status.queue_remaining, status.error, status.device_name)


@dataclass(frozen=True)
class _Check:
    """A probe under way and the worker configuration it probes."""

    task: asyncio.Task[WorkerStatus]
    config: WorkerConfig


class HealthMonitor:
    """Polls enabled workers and holds their last known status."""

    def __init__(self, registry: Registry, clients: ClientPool, events: Events, master_id: str | None = None) -> None:
        self._registry = registry
        self._master_id = master_id
        self._is_master: dict[str, bool] = {}
        """worker id -> whether its address answered with this master's own id when it last came online."""
        self._clients = clients
        self._events = events
        self._statuses: dict[str, WorkerStatus] = {}
        self._due: dict[str, float] = {}
        self._failures: dict[str, int] = {}
        self._checks: dict[str, _Check] = {}
        self._checked_as: dict[str, WorkerConfig] = {}
        """The configuration each worker was last polled with; a change starts its checks afresh."""
        self._changed = asyncio.Event()
        self._override: StatusOverride = lambda worker_id: None
        self._revisions: dict[str, int] = {}
        self._numbers = Revisions()
        registry.subscribe(self._sync)

    def set_override(self, override: StatusOverride) -> None:
        """Lets the local process manager speak for its workers while they launch or have failed."""
        self._override = override

    def status(self, worker_id: str) -> WorkerStatus:
        """What is shown for the worker: the override, else the last health check, with its revision."""
        shown = self._override(worker_id) or self._statuses.get(worker_id, WorkerStatus(WorkerState.UNKNOWN))
        return replace(shown, revision=self._revisions.get(worker_id, 0))

    def publish(self, worker_id: str) -> None:
        """Pushes the worker's shown status under a new revision: after any change a user sees,
        the health monitor's own or the override's."""
        self._revisions[worker_id] = self._numbers.next()
        self._events.worker_status(worker_id, self.status(worker_id).as_json())
        self._changed.set()

    def set_status(self, worker_id: str, status: WorkerStatus) -> None:
        """The single setter: records, and logs/publishes only when something a user sees changed."""
        previous = self._statuses.get(worker_id)
        self._statuses[worker_id] = status
        if previous is not None and _reportable(previous) == _reportable(status):
            return
        if previous is None or previous.state != status.state:
            if status.error:
                logger.info("Worker %s is %s: %s", worker_id, status.state.value, status.error)
            else:
                logger.info("Worker %s is %s", worker_id, status.state.value)
        self.publish(worker_id)

    async def wait_for_change(self, timeout: float) -> None:
        """Returns after the next status change, or after `timeout` seconds."""
        self._changed.clear()
        try:
            await asyncio.wait_for(self._changed.wait(), timeout)
        except TimeoutError:
            pass

    async def check(self, worker: WorkerConfig) -> WorkerStatus:
        """Probes one worker now (shared with a check of the same configuration already in flight)
        and records the result. A host is never probed here: its own sync speaks for it."""
        if worker.type == "host":
            return self.status(worker.id)
        in_flight = self._checks.get(worker.id)
        if in_flight is None or in_flight.task.done() or in_flight.config != worker:
            in_flight = self._checks[worker.id] = _Check(asyncio.ensure_future(self._probe(worker)), worker)
        return await asyncio.shield(in_flight.task)

    async def _probe(self, worker: WorkerConfig) -> WorkerStatus:
        """One check; whatever the worker answers, it ends in a status and the next check's time."""
        client = self._clients.client(worker)
        try:
            stats = await client.system_stats(PROBE_READ_TIMEOUT)
            started = time.monotonic()
            queue = await client.queue_remaining(PROBE_READ_TIMEOUT)
            round_trip_ms = (time.monotonic() - started) * 1000
            status = _answering(stats, queue, round_trip_ms)
            if await self._answers_as_this_master(worker):
                status = WorkerStatus(WorkerState.ERROR, error=SELF_ERROR, checked_at=time.time())
        except WorkerUnavailable as error:
            # A refused token or certificate, or an answer that is not ComfyUI's, will not fix itself:
            # shown as an error, not as offline.
            state = WorkerState.ERROR if error.stage in ERROR_STAGES or isinstance(error, BadResult) else WorkerState.OFFLINE
            status = WorkerStatus(state, error=error.cause, checked_at=time.time())
        except Exception as error:  # an answer no check foresaw must not stop the checks of this worker
            logger.warning("Worker %s: health check failed on an unexpected answer", worker.name, exc_info=True)
            status = WorkerStatus(WorkerState.ERROR, error=f"unexpected answer ({type(error).__name__})", checked_at=time.time())
        failures = 0 if status.state.answers else self._failures.get(worker.id, 0) + 1
        self._failures[worker.id] = failures
        interval = min(self._interval() * (2 ** min(failures, 8)), MAX_BACKOFF_SECONDS) if failures else self._interval()
        current = self._registry.snapshot().worker(worker.id)
        if current == worker and current.enabled:  # not an answer from an address since changed
            self.set_status(worker.id, status)
            self._due[worker.id] = time.monotonic() + interval
        return status

    async def run(self) -> None:
        """The polling loop; runs until cancelled."""
        while True:
            config = self._registry.snapshot()
            known = {worker.id for worker in config.workers}
            for worker_id in set(self._statuses) - known:
                self._statuses.pop(worker_id, None)
                self._due.pop(worker_id, None)
                self._checked_as.pop(worker_id, None)
                self._is_master.pop(worker_id, None)
                await self._clients.forget(worker_id)
            self._sync(config)
            now = time.monotonic()
            for worker in config.workers:
                if worker.type == "host":
                    continue  # not a participant: workers/hosts/sync.py polls it and speaks for it
                in_flight = self._checks.get(worker.id)
                if worker.enabled and now >= self._due.get(worker.id, 0.0) and (in_flight is None or in_flight.task.done()):
                    self._checks[worker.id] = _Check(asyncio.ensure_future(self._probe(worker)), worker)
            await asyncio.sleep(TICK_SECONDS)

    def _sync(self, config: RegistryFile) -> None:
        """Brings the statuses in line with the configuration: a disabled worker shows disabled, and a
        re-enabled or changed one unknown until its next check, which is due at once. Called by the
        registry on every change, before the change is rendered anywhere."""
        for worker in config.workers:
            if self._checked_as.get(worker.id, worker) != worker:
                # Its address or settings changed: check it afresh, now (a check of the new
                # configuration already under way, from a job starting, is kept).
                self._forget_history(worker.id, keep_check_of=worker)
            self._checked_as[worker.id] = worker
            if not worker.enabled:
                self._due.pop(worker.id, None)
                self.set_status(worker.id, WorkerStatus(WorkerState.DISABLED))
            elif self._statuses.get(worker.id, WorkerStatus(WorkerState.UNKNOWN)).state == WorkerState.DISABLED:
                self.set_status(worker.id, WorkerStatus(WorkerState.UNKNOWN))

    async def _answers_as_this_master(self, worker: WorkerConfig) -> bool:
        """Whether the worker's address is this master itself; asked when it comes online."""
        if self._master_id is None:
            return False
        previous = self._statuses.get(worker.id)
        if previous is None or not previous.state.answers:
            self._is_master[worker.id] = await self._clients.client(worker).master_id(PROBE_READ_TIMEOUT) == self._master_id
        return self._is_master.get(worker.id, False)

    def recheck(self, worker: WorkerConfig) -> asyncio.Future[WorkerStatus]:
        """Checks a worker afresh: no backoff from failures before now, no probe already under way.

        For a local worker whose process just came up or was stopped: what its checks said before
        no longer holds. The worker shows as unknown from this call on (not from when the probe
        starts), so an answer rendered right after it never repeats the outdated status.
        """
        self._forget_history(worker.id)
        return asyncio.ensure_future(self.check(worker))

    def _forget_history(self, worker_id: str, keep_check_of: WorkerConfig | None = None) -> None:
        self._due.pop(worker_id, None)
        self._failures.pop(worker_id, None)
        in_flight = self._checks.get(worker_id)
        if in_flight is not None and in_flight.config != keep_check_of:
            self._checks.pop(worker_id)
            in_flight.task.cancel()
        if self._statuses.get(worker_id, WorkerStatus(WorkerState.UNKNOWN)).state != WorkerState.DISABLED:
            self.set_status(worker_id, WorkerStatus(WorkerState.UNKNOWN))

    async def stop(self) -> None:
        checks = [check.task for check in self._checks.values() if not check.task.done()]
        for task in checks:
            task.cancel()
        await asyncio.gather(*checks, return_exceptions=True)

    def _interval(self) -> float:
        return self._registry.snapshot().settings.health_interval
