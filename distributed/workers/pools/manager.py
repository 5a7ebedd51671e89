"""Runs every elastic pool of one master: starts members when work waits, stops them when idle, keeps
the day's budget, and leaves nothing running behind it.

The life of a member:

    start command launched (recorded first) -> STARTING -> its JSON line gives an address
        -> /system_stats answers within the readiness deadline -> written into workers.json -> ONLINE
    ONLINE -> an ordinary worker: health checks, scheduling, failover and the fast path as for any other
    idle past idle_seconds, budget spent, pool removed, stopped by hand, stopped answering
        -> (holding a share: disabled, and stopped once its share is done) -> STOPPING
        -> removed from workers.json -> stop command -> forgotten (or, if the stop command fails, retried)

A start that fails (the command fails or prints no address, the member never answers, workers.json
cannot take it) is reported with the command's output, the member is stopped, and the pool backs
off before its next try. How the pool decides is `policy`; what it records is `ledger`.

The master reaches the jobs stage only through two callables: since when work has waited with every
participant busy, and whether a worker holds a share now. Everything here runs on the server loop.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import enum
import logging
import math
import os
import secrets
import subprocess
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from ...config.models import PoolConfig, RegistryFile, WorkerConfig
from ...config.registry import Registry
from ...config.validation import describe_validation_error
from ...errors import ConfigError, ProcessError, UnknownPool, UnknownWorker, WorkerUnavailable
from ...events import Events, Revisions
from ..health import HealthMonitor
from ..local.processes import RunningProcess
from ..pool import ClientPool
from ..status import WorkerState
from . import policy
from .commands import CommandFailed, CommandRun, member_argv, member_env
from .ledger import LEDGER_FILE, Ledger, MemberRecord, write_private

logger = logging.getLogger(__name__)

TICK_SECONDS = 0.25
READY_POLL_SECONDS = 0.25
READY_PROBE_SECONDS = 2.0
ADOPT_PROBE_SECONDS = 5.0
STOP_TIMEOUT_SECONDS = 120.0
LOST_AFTER_SECONDS = 20.0
"""A member that does not answer for this long is stopped (a share it held was re-run elsewhere already)."""
SAVE_INTERVAL_SECONDS = 10.0
EXIT_STOP_SECONDS = 30.0
"""How long a master that exits without running its cleanup (Ctrl-C) waits for the stop commands."""

WaitingSince = Callable[[], "float | None"]
HoldsShare = Callable[[str], bool]


class MemberState(enum.StrEnum):
    STARTING = "starting"
    ONLINE = "online"
    STOPPING = "stopping"


@dataclass
class Member:
    """One member on the server loop: its record plus what the loop follows of it."""

    record: MemberRecord
    state: MemberState = MemberState.STARTING
    idle_since: float | None = None
    """Monotonic time since which it holds no share (online members only)."""
    holds_share: bool = False
    offline_since: float | None = None
    draining: bool = False
    """Disabled so that it takes no new share; stopped once it holds none."""
    stop_reason: str | None = None
    stop_error: str | None = None
    stop_failures: int = 0
    stop_retry_at: float | None = None
    run: CommandRun | None = None
    task: asyncio.Task | None = None
    timeline: dict[str, float] = field(default_factory=dict)
    """Wall-clock times of its start: wait_began, command_started, address_at, online_at, first_share_at."""

    @property
    def member_id(self) -> str:
        return self.record.member_id


@dataclass
class PoolRuntime:
    """What the loop follows of one pool beyond its configuration."""

    failures: int = 0
    """Failed starts in a row."""
    backoff_until: float | None = None
    last_failure: dict[str, Any] | None = None
    blocked: str | None = None
    """Why it does not start the member it wants, or None."""
    alerted: str | None = None
    """The refusal last sent as a toast, so each is sent once."""


class PoolManager:
    """Owns the members of every pool of this master."""

    def __init__(
        self,
        registry: Registry,
        health: HealthMonitor,
        clients: ClientPool,
        events: Events,
        state_dir: Path,
        waiting_since: WaitingSince,
        holds_share: HoldsShare,
        environ: Mapping[str, str] = os.environ,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self._registry = registry
        self._health = health
        self._clients = clients
        self._events = events
        self._state_dir = state_dir
        self._waiting_since = waiting_since
        self._holds_share = holds_share
        self._environ = dict(environ)
        self._clock = clock
        self._wall = wall
        self._ledger = Ledger(state_dir / LEDGER_FILE)
        self._members: dict[str, Member] = {}
        self._pools: dict[str, PoolRuntime] = {}
        self._last_growth = -math.inf
        """When a member last started for waiting work or came online: waiting counts from then."""
        self._save_lock = asyncio.Lock()
        self._saved_at = -math.inf
        self._published: list[dict[str, Any]] | None = None
        self._revisions = Revisions()
        self._revision = 0
        self._background: set[asyncio.Task] = set()
        self._closed = False
        self._reconciled = False

    # --- life cycle -------------------------------------------------------------------------------

    async def start(self) -> None:
        """Loads what a previous master recorded and reconciles with it (see `_reconcile`), at once or,
        while workers.json is invalid, once it is fixed: its pools are unknown until then."""
        self._ledger = await asyncio.to_thread(Ledger.load, self._state_dir)
        atexit.register(self._reap_at_exit)
        if self._registry.error is None:
            await self._reconcile()
        elif self._ledger.members:
            logger.warning("Elastic pools: %d member(s) left by the previous master are reconciled once workers.json is valid",
                           len(self._ledger.members))

    async def _reconcile(self) -> None:
        """Recorded members that still answer are adopted; every other recorded or listed member is stopped."""
        self._reconciled = True
        config, wall, now = self._registry.snapshot(), self._wall(), self._clock()
        for record in self._ledger.members.values():
            self._ledger.credit(record, wall)  # it may have run all the while the master was down
        records = list(self._ledger.members.values())
        answers = await asyncio.gather(*(self._answers_now(record) for record in records))
        for record, answering in zip(records, answers, strict=True):
            member = self._members[record.member_id] = Member(record)
            if config.pool(record.pool) is not None and answering:
                self._adopt(member, config, now)
            else:
                why = "its pool is gone" if config.pool(record.pool) is None else "it no longer answers"
                self._retire(member, f"left by a previous master; {why}")
        for worker in config.workers:
            if worker.manager_id("pool") is not None and worker.id not in self._members:
                self._retire_stray(worker)
        await self._save()

    async def run(self) -> None:
        """The pools' loop; runs until cancelled."""
        while True:
            try:
                await self._tick()
            except Exception:
                logger.exception("Elastic pools: a round of decisions failed")
            await asyncio.sleep(TICK_SECONDS)  # a poll of the waiting work, not synchronisation

    async def close(self) -> None:
        """Stops every member (the master is stopping cleanly), waiting for their stop commands."""
        if self._closed:
            return
        self._closed = True
        atexit.unregister(self._reap_at_exit)
        stops = []
        for member in list(self._members.values()):
            if member.state == MemberState.STOPPING and member.task is not None and not member.task.done():
                stops.append(member.task)
            else:
                member.state, member.draining = MemberState.STOPPING, False
                stops.append(asyncio.ensure_future(self._stop(member, "the master is stopping", member.task)))
        if stops:
            logger.info("Elastic pools: stopping %d member(s) as the master stops", len(stops))
            await asyncio.wait(stops, timeout=STOP_TIMEOUT_SECONDS + 10)
        for task in self._background:
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        self._ledger_credit_all()
        await self._save()

    # --- what the API and the panel use -----------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """Every pool with its members, hours used against the budget, and why it does not grow, under
        a revision. Content seen for the first time is pushed at once under a new revision, whether the
        loop or a route looks first, so an answer and a push with the same revision say the same."""
        config, now, wall = self._registry.snapshot(), self._clock(), self._wall()
        pools = [self._pool_view(pool.name, pool, now, wall) for pool in config.pools]
        gone = sorted({m.record.pool for m in self._members.values()} - {pool.name for pool in config.pools})
        pools += [self._pool_view(name, None, now, wall) for name in gone]
        signature = [{**pool, "hours_used": round(pool["hours_used"], 2)} for pool in pools]  # hours by the hundredth
        if signature != self._published:
            self._published, self._revision = signature, self._revisions.next()
            self._events.pools_changed({"revision": self._revision, "pools": pools})
        return {"revision": self._revision, "pools": pools}

    def can_grow(self) -> bool:
        """Whether a worker may still come for waiting work: a member is starting, or some pool may start
        one (not at max, budget left, not failing every start). Work nobody can take now then waits."""
        if any(member.state == MemberState.STARTING for member in self._members.values()):
            return True
        wall, now = self._wall(), self._clock()
        for pool in self._registry.snapshot().pools:
            refusal = policy.start_refusal(pool, self._facts(pool, wall), now, by_hand=True)
            if refusal is None and self._runtime(pool.name).failures < 3:
                return True
        return False

    async def start_member_now(self, pool_name: str) -> dict[str, Any]:
        """Starts a member at once, by hand: only `max` and the budget apply."""
        pool = self._pool(pool_name)
        refusal = self._registry_refusal() or policy.start_refusal(pool, self._facts(pool, self._wall()), self._clock(), by_hand=True)
        if refusal is not None:
            raise ProcessError(f"pool '{pool_name}' cannot start a member now: {refusal}")
        member = self._begin(pool, "started by hand")
        return self._member_view(member, self._clock(), self._wall())

    async def stop_member_now(self, pool_name: str, member_id: str) -> dict[str, Any]:
        """Stops a member by hand; one that holds a share takes no new one and stops once it is done."""
        self._pool(pool_name)
        member = self._members.get(member_id)
        if member is None or member.record.pool != pool_name:
            raise UnknownWorker(member_id)
        self._retire(member, "stopped by hand")
        self._publish()
        return self._member_view(member, self._clock(), self._wall())

    # --- one round of decisions -------------------------------------------------------------------

    async def _tick(self) -> None:
        if not self._reconciled:
            if self._registry.error is not None:
                return
            await self._reconcile()
        config, now, wall = self._registry.snapshot(), self._clock(), self._wall()
        self._ledger_credit_all()
        self._observe(now, wall)
        for member in list(self._members.values()):
            self._follow(member, config, now)
        if self._registry.error is None:  # an invalid file is not read: its last valid content may be stale
            for worker in config.workers:
                if worker.manager_id("pool") is not None and worker.id not in self._members:
                    self._retire_stray(worker)
        for pool in config.pools:
            self._shrink(pool, now, wall)
        self._grow(config, now, wall)
        if wall - self._saved_at >= SAVE_INTERVAL_SECONDS:
            await self._save()
        self._publish()

    def _observe(self, now: float, wall: float) -> None:
        """Who holds a share, who idles since when, who stopped answering."""
        for member in self._members.values():
            if member.state != MemberState.ONLINE:
                continue
            member.holds_share = self._holds_share(member.member_id)
            if member.holds_share:
                member.idle_since = None
                member.timeline.setdefault("first_share_at", wall)
            elif member.idle_since is None:
                member.idle_since = now
            state = self._health.status(member.member_id).state
            if state in (WorkerState.OFFLINE, WorkerState.ERROR):
                member.offline_since = member.offline_since or now
            elif state.answers:
                member.offline_since = None

    def _follow(self, member: Member, config: RegistryFile, now: float) -> None:
        """Stops a member whose pool is gone, that left workers.json, or that stopped answering; retries
        a failed stop; finishes a drain."""
        if member.state == MemberState.STOPPING:
            due = member.stop_retry_at is not None and now >= member.stop_retry_at
            if due and (member.task is None or member.task.done()):
                member.stop_retry_at = None
                member.task = self._spawn(self._stop(member, member.stop_reason or "stopping"))
            return
        if member.draining:
            if not member.holds_share:
                self._retire(member, member.stop_reason or "stopping")
            return
        if config.pool(member.record.pool) is None:
            self._retire(member, "its pool was removed")
        elif member.state == MemberState.ONLINE and config.worker(member.member_id) is None and self._registry.error is None:
            self._retire(member, "it was removed from workers.json")
        elif member.offline_since is not None and now - member.offline_since >= LOST_AFTER_SECONDS:
            error = self._health.status(member.member_id).error or "no answer"
            reason = f"stopped answering for {LOST_AFTER_SECONDS:g}s ({error})"
            self._report_failure(member, reason, "", backoff=False)
            self._retire(member, reason)

    def _shrink(self, pool: PoolConfig, now: float, wall: float) -> None:
        runtime = self._runtime(pool.name)
        members = [m for m in self._members.values() if m.record.pool == pool.name and m.state != MemberState.STOPPING]
        if policy.budget_spent(pool, self._ledger.used_seconds(pool.name, wall)):
            message = f"the day's budget of {pool.budget_hours_per_day:g} member-hours is spent"
            runtime.blocked = message
            self._alert_once(pool.name, "warn", f"Pool {pool.name}: budget spent",
                             f"{message}; its members stop once their shares are done")
            for member in members:
                self._retire(member, message)
            return
        idle = {m.member_id: m.idle_since for m in members
                if m.state == MemberState.ONLINE and not m.draining and m.idle_since is not None}
        for member_id in policy.idle_to_stop(pool, len(members), idle, now):
            self._retire(self._members[member_id], f"idle for {pool.idle_seconds:g}s")

    def _grow(self, config: RegistryFile, now: float, wall: float) -> None:
        """Keeps each pool at its min, and starts one member for waiting work in the first pool that may."""
        waiting = self._waiting_since()
        starting = any(member.state == MemberState.STARTING for member in self._members.values())
        waited = None if waiting is None or starting else now - max(waiting, self._last_growth)
        for pool in config.pools:
            runtime = self._runtime(pool.name)
            facts = self._facts(pool, wall)
            if policy.budget_spent(pool, facts.used_seconds):
                continue
            reason = policy.growth_reason(pool, facts, waited)
            if reason is None:
                runtime.blocked = None
                continue
            refusal = self._registry_refusal() or policy.start_refusal(pool, facts, now)
            runtime.blocked = refusal
            if refusal is not None:
                if policy.is_budget_refusal(refusal):
                    self._alert_once(pool.name, "warn", f"Pool {pool.name}: no new member, budget", refusal)
                continue
            member = self._begin(pool, reason)
            if waiting is not None:
                member.timeline["wait_began"] = wall - (now - waiting)
            if facts.live >= pool.min:  # grown for waiting work: the next pool waits for another period
                self._last_growth, waited = now, None

    # --- starting ---------------------------------------------------------------------------------

    def _begin(self, pool: PoolConfig, reason: str) -> Member:
        wall = self._wall()
        member_id = self._new_member_id(pool.name)
        record = MemberRecord(member_id, pool.name, started_at=wall, accounted_until=wall,
                              stop_command=member_argv(pool.stop_command, member_id, pool.name))
        self._ledger.members[member_id] = record
        self._ledger.record_start(pool.name, wall)
        member = self._members[member_id] = Member(record)
        runtime = self._runtime(pool.name)
        runtime.blocked = runtime.alerted = None
        logger.info("Pool %s: starting member %s (%s)", pool.name, member_id, reason)
        member.task = self._spawn(self._start(member, pool))
        self._publish()
        return member

    async def _start(self, member: Member, pool: PoolConfig) -> None:
        deadline = self._clock() + pool.ready_timeout_seconds
        run = member.run = CommandRun(member_argv(pool.start_command, member.member_id, pool.name),
                                      member_env(self._environ, member.member_id, pool.name))
        try:
            await self._save()  # recorded before it runs: a master that crashes now still knows of it
            member.timeline["command_started"] = self._wall()
            await run.spawn()
            assert run.running is not None
            member.record.pid, member.record.create_time = run.running.pid, run.running.create_time
            fields = await run.address(max(0.0, deadline - self._clock()))
            member.timeline["address_at"] = self._wall()
            worker = self._member_worker(member, fields, run)
            member.record.url, member.record.token, member.record.headers = worker.url, worker.auth_token, dict(worker.headers)
            await self._save()
            await self._await_online(worker, deadline, pool.ready_timeout_seconds, run)
            member.timeline["online_at"] = self._wall()
            self._register(worker)
        except CommandFailed as error:
            await self._start_failed(member, pool, str(error), error.output)
            return
        except ConfigError as error:  # workers.json refused the member (invalid file, for instance)
            await self._start_failed(member, pool, f"could not be written into workers.json: {error}", run.output())
            return
        except Exception as error:  # a fault of ours: still reported, and the member still stopped
            logger.exception("Pool %s: starting member %s failed", pool.name, member.member_id)
            await self._start_failed(member, pool, f"unexpected error: {error!r}", run.output())
            return
        member.state, member.idle_since = MemberState.ONLINE, self._clock()
        self._last_growth = max(self._last_growth, self._clock())  # work still waiting waits again before the next start
        runtime = self._runtime(pool.name)
        runtime.failures, runtime.backoff_until = 0, None
        self._track(self._health.recheck(worker))  # its first health check now, not at the next poll
        logger.info("Pool %s: member %s is online at %s", pool.name, member.member_id, worker.base_url)
        self._publish()

    def _member_worker(self, member: Member, fields: dict[str, Any], run: CommandRun) -> WorkerConfig:
        """The member as a worker of workers.json, from its start command's JSON line."""
        unknown = sorted(set(fields) - {"url", "token", "headers"})
        if unknown:
            raise CommandFailed(f"printed an address line with unknown keys {unknown} (allowed: url, token, headers)", run.output())
        try:
            return WorkerConfig(id=member.member_id, name=member.member_id, type="cloud", url=fields.get("url"),
                                auth_token=fields.get("token"), headers=fields.get("headers") or {},
                                managed_by=f"pool:{member.record.pool}")
        except ValidationError as error:
            problem = str(describe_validation_error(error)).replace("auth_token", "token")
            raise CommandFailed(f"printed an unusable address line: {problem}", run.output()) from None

    async def _await_online(self, worker: WorkerConfig, deadline: float, timeout: float, run: CommandRun) -> None:
        client = self._clients.client(worker)
        last = "no answer yet"
        while True:
            remaining = deadline - self._clock()
            if remaining <= 0:
                raise CommandFailed(f"did not answer at {worker.base_url} within {timeout:g}s ({last})", run.output())
            try:
                async with asyncio.timeout(min(READY_PROBE_SECONDS, remaining)):
                    stats = await client.get_json("/system_stats", READY_PROBE_SECONDS, retries=0)
                if isinstance(stats, dict) and "system" in stats:
                    return
                last = "/system_stats does not look like ComfyUI's"
            except WorkerUnavailable as error:
                last = error.cause
            except TimeoutError:
                last = "no answer within the probe's deadline"
            await asyncio.sleep(READY_POLL_SECONDS)  # a readiness poll, not synchronisation

    async def _start_failed(self, member: Member, pool: PoolConfig, reason: str, output: str) -> None:
        logger.error("Pool %s: member %s failed to start: %s\n%s", pool.name, member.member_id, reason, output)
        self._report_failure(member, reason, output, backoff=True)
        member.state, member.stop_reason = MemberState.STOPPING, "it failed to start"
        await self._stop(member, "it failed to start")

    def _report_failure(self, member: Member, reason: str, output: str, backoff: bool) -> None:
        runtime = self._runtime(member.record.pool)
        wall = self._wall()
        if backoff:
            runtime.failures += 1
            runtime.backoff_until = self._clock() + policy.backoff_seconds(runtime.failures)
        runtime.last_failure = {"member_id": member.member_id, "at": wall, "reason": reason, "output": output,
                                "started_at": member.record.started_at}
        self._events.pool_alert(member.record.pool, "error", f"Pool {member.record.pool}: member {member.member_id} failed", reason)
        self._publish()

    # --- stopping ---------------------------------------------------------------------------------

    def _retire(self, member: Member, reason: str) -> None:
        """Stops a member now, or, while it holds a share, once that share is done (it takes no new one)."""
        if member.state == MemberState.STOPPING:
            return
        if member.holds_share:
            if not member.draining:
                member.draining, member.stop_reason = True, reason
                logger.info("Pool %s: member %s stops once its share is done (%s)", member.record.pool, member.member_id, reason)
                self._set_enabled(member.member_id, False)
            return
        member.state, member.stop_reason = MemberState.STOPPING, reason
        member.task = self._spawn(self._stop(member, reason, member.task))

    def _retire_stray(self, worker: WorkerConfig) -> None:
        """A worker of workers.json marked as a pool's member that this master has no record of: stopped
        with its pool's stop command, or only removed when its pool is gone too."""
        pool = self._registry.snapshot().pool(worker.manager_id("pool") or "")
        if pool is None:
            logger.warning("Worker %s names pool %s, which does not exist: removed from workers.json, nothing to stop it with",
                           worker.id, worker.manager_id("pool"))
            self._unregister(worker.id)
            return
        wall = self._wall()
        record = MemberRecord(worker.id, pool.name, started_at=wall, accounted_until=wall,
                              stop_command=member_argv(pool.stop_command, worker.id, pool.name), url=worker.url)
        self._ledger.members[worker.id] = record
        member = self._members[worker.id] = Member(record)
        self._retire(member, "listed in workers.json as a member, but not recorded by this master")

    async def _stop(self, member: Member, reason: str, starting: asyncio.Task | None = None) -> None:
        """Removes the member from workers.json, runs its stop command, and forgets it; a failed stop
        command is retried later (the member may still run, and its time still counts)."""
        if starting is not None and not starting.done() and starting is not asyncio.current_task():
            starting.cancel()
            await asyncio.gather(starting, return_exceptions=True)
        record = member.record
        logger.info("Pool %s: stopping member %s (%s)", record.pool, record.member_id, reason)
        self._publish()
        self._unregister(record.member_id)
        await self._clients.forget(record.member_id)
        if member.run is not None:
            await member.run.end()
        run = CommandRun(self._stop_argv(record, self._registry.snapshot()), member_env(self._environ, record.member_id, record.pool))
        try:
            await run.spawn()
            await run.finish(STOP_TIMEOUT_SECONDS)
        except CommandFailed as error:
            member.stop_failures += 1
            member.stop_error = f"stop command {error}"
            member.stop_retry_at = self._clock() + policy.stop_retry_seconds(member.stop_failures)
            logger.error("Pool %s: member %s: stop command %s; retried in %.0fs\n%s", record.pool, record.member_id, error,
                         member.stop_retry_at - self._clock(), error.output)
            self._alert_once(record.pool, "error", f"Pool {record.pool}: member {record.member_id} could not be stopped", str(error))
            self._publish()
            return
        if record.pid is not None and record.create_time is not None:  # a start command still running
            await asyncio.to_thread(RunningProcess(record.pid, record.create_time).end_tree, 10.0)
        self._ledger.credit(record, self._wall())
        self._ledger.members.pop(record.member_id, None)
        self._members.pop(record.member_id, None)
        logger.info("Pool %s: member %s stopped", record.pool, record.member_id)
        await self._save()
        self._publish()

    def _reap_at_exit(self) -> None:
        """atexit, for a master that exits without its cleanup (Ctrl-C, SIGTERM): the loop is gone, so
        this is plain blocking code. Runs every recorded member's stop command side by side."""
        for record in self._ledger.members.values():  # a start command still running would start its member after the stop
            if record.pid is not None and record.create_time is not None:
                RunningProcess(record.pid, record.create_time).end_tree(5.0)
        stops: dict[str, subprocess.Popen] = {}
        config = self._registry.snapshot()
        for record in self._ledger.members.values():
            env = member_env(self._environ, record.member_id, record.pool)
            try:
                stops[record.member_id] = subprocess.Popen(self._stop_argv(record, config), env=env, stdin=subprocess.DEVNULL,
                                                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            except OSError as error:
                logger.error("Pool %s: cannot stop member %s at exit: %s", record.pool, record.member_id, error)
        deadline = time.monotonic() + EXIT_STOP_SECONDS
        for member_id, process in stops.items():
            try:
                code = process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                continue
            record = self._ledger.members[member_id]
            if code == 0:
                self._ledger.credit(record, time.time())
                self._ledger.members.pop(member_id)
                self._unregister(member_id)
        with contextlib.suppress(OSError):
            write_private(self._ledger.path, self._ledger.dump())

    @staticmethod
    def _stop_argv(record: MemberRecord, config: RegistryFile) -> list[str]:
        """The pool's stop command as it is now (a fix made since the member started applies), or as
        it was when the member started, if its pool is gone."""
        pool = config.pool(record.pool)
        return member_argv(pool.stop_command, record.member_id, pool.name) if pool is not None else record.stop_command

    # --- workers.json -----------------------------------------------------------------------------

    def _register(self, worker: WorkerConfig) -> None:
        def add(config: RegistryFile) -> RegistryFile:
            config.workers = [w for w in config.workers if w.id != worker.id] + [worker]
            return config

        self._registry.update(add)

    def _unregister(self, member_id: str) -> None:
        if self._registry.snapshot().worker(member_id) is None:
            return

        def remove(config: RegistryFile) -> RegistryFile:
            config.workers = [w for w in config.workers if w.id != member_id]
            return config

        try:
            self._registry.update(remove)
        except ConfigError as error:
            logger.warning("Member %s stays in workers.json for now: %s", member_id, error)

    def _set_enabled(self, member_id: str, enabled: bool) -> None:
        def change(config: RegistryFile) -> RegistryFile:
            config.workers = [w.model_copy(update={"enabled": enabled}) if w.id == member_id else w for w in config.workers]
            return config

        try:
            self._registry.update(change)
        except ConfigError as error:
            logger.warning("Member %s: cannot be kept from new shares (%s); it stops once it holds none", member_id, error)

    def _registry_refusal(self) -> str | None:
        if self._registry.error is not None:
            return "workers.json is invalid, so a new member could not be recorded there; fix the file"
        return None

    def _adopt(self, member: Member, config: RegistryFile, now: float) -> None:
        record = member.record
        assert record.url is not None
        worker = WorkerConfig(id=record.member_id, name=record.member_id, type="cloud", url=record.url, auth_token=record.token,
                              headers=record.headers, managed_by=f"pool:{record.pool}")
        listed = config.worker(record.member_id)
        try:
            if listed is None or listed.model_copy(update={"enabled": True}) != worker:
                self._register(worker)
        except ConfigError as error:
            self._retire(member, f"left by a previous master; cannot be written into workers.json ({error})")
            return
        member.state, member.idle_since = MemberState.ONLINE, now
        member.timeline["online_at"] = self._wall()
        logger.info("Pool %s: adopted member %s at %s, still running from a previous master", record.pool, record.member_id, record.url)

    async def _answers_now(self, record: MemberRecord) -> bool:
        if record.url is None:
            return False
        worker = WorkerConfig(id=record.member_id, name=record.member_id, type="cloud", url=record.url, auth_token=record.token,
                              headers=record.headers, managed_by=f"pool:{record.pool}")
        try:
            async with asyncio.timeout(ADOPT_PROBE_SECONDS):
                stats = await self._clients.client(worker).get_json("/system_stats", ADOPT_PROBE_SECONDS, retries=0)
        except (WorkerUnavailable, TimeoutError):
            return False
        return isinstance(stats, dict) and "system" in stats

    # --- bookkeeping ------------------------------------------------------------------------------

    def _pool(self, name: str) -> PoolConfig:
        pool = self._registry.snapshot().pool(name)
        if pool is None:
            raise UnknownPool(name)
        return pool

    def _runtime(self, pool: str) -> PoolRuntime:
        return self._pools.setdefault(pool, PoolRuntime())

    def _facts(self, pool: PoolConfig, wall: float) -> policy.PoolFacts:
        live = sum(1 for m in self._members.values() if m.record.pool == pool.name and m.state != MemberState.STOPPING)
        return policy.PoolFacts(live, self._ledger.used_seconds(pool.name, wall), len(self._ledger.recent_starts(pool.name, wall)),
                                self._runtime(pool.name).backoff_until)

    def _new_member_id(self, pool: str) -> str:
        taken = {w.id for w in self._registry.snapshot().workers} | set(self._members)
        while (member_id := f"{pool}-{secrets.token_hex(3)}") in taken:
            pass
        return member_id

    def _ledger_credit_all(self) -> None:
        wall = self._wall()
        for record in self._ledger.members.values():
            self._ledger.credit(record, wall)

    async def _save(self) -> None:
        async with self._save_lock:
            self._saved_at = self._wall()
            text = self._ledger.dump()
            try:
                await asyncio.to_thread(write_private, self._ledger.path, text)
            except OSError as error:
                logger.error("Elastic pools: cannot write %s: %s", self._ledger.path, error)

    def _alert_once(self, pool: str, severity: str, summary: str, detail: str) -> None:
        runtime = self._runtime(pool)
        if runtime.alerted == summary:
            return
        runtime.alerted = summary
        logger.warning("%s: %s", summary, detail)
        self._events.pool_alert(pool, severity, summary, detail)

    def _spawn(self, work: Awaitable[None]) -> asyncio.Task:
        task = asyncio.ensure_future(work)
        self._track(task)
        return task

    def _track(self, future: asyncio.Future) -> None:
        self._background.add(future)  # type: ignore[arg-type]
        future.add_done_callback(self._background.discard)

    def _publish(self) -> None:
        """Pushes the pools' snapshot if its content is new (see `snapshot`)."""
        self.snapshot()

    def _pool_view(self, name: str, pool: PoolConfig | None, now: float, wall: float) -> dict[str, Any]:
        runtime = self._runtime(name)
        used = self._ledger.used_seconds(name, wall)
        backoff = runtime.backoff_until
        return {
            "name": name,
            "config": pool.model_dump(mode="json") if pool is not None else None,
            "members": [self._member_view(m, now, wall) for m in self._members.values() if m.record.pool == name],
            "hours_used": round(used / policy.HOUR, 4),
            "budget_hours": pool.budget_hours_per_day if pool is not None else None,
            "budget_spent": pool is not None and policy.budget_spent(pool, used),
            "blocked": runtime.blocked,
            "last_failure": runtime.last_failure,
            "failures_in_a_row": runtime.failures,
            "next_try_at": round(wall + backoff - now, 1) if backoff is not None and backoff > now else None,
            "starts_last_10min": len(self._ledger.recent_starts(name, wall)),
        }

    def _member_view(self, member: Member, now: float, wall: float) -> dict[str, Any]:
        idle_since = None if member.idle_since is None else round(wall - (now - member.idle_since), 1)
        return {
            "id": member.member_id,
            "state": member.state.value,
            "url": member.record.url,
            "started_at": member.record.started_at,
            "idle_since": idle_since if member.state == MemberState.ONLINE and not member.holds_share else None,
            "holds_share": member.holds_share,
            "draining": member.draining,
            "stop_reason": member.stop_reason,
            "stop_error": member.stop_error,
            "timeline": dict(member.timeline),
        }
