"""One keep-alive session per worker, built from its auth and TLS settings.

A worker behind an authenticating proxy or a tunnel with a private certificate is then reached the
same way on every request and on the websocket. No session follows a redirect: aiohttp would send
a worker's custom headers (a tunnel's access secret) to wherever it is redirected. The pool is owned
by the application and closed with it.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiohttp

from ..config.models import DEFAULT_MAX_ANSWER_MIB, WorkerConfig
from ..config.secrets import connection_warnings
from ..errors import WorkerOffline, WorkerUnavailable
from .client import WorkerClient
from .failures import RedirectRefused
from .timeouts import client_timeout

logger = logging.getLogger(__name__)


def _connection_settings(worker: WorkerConfig) -> tuple:
    """What a worker's session is built from; a change of any of these builds a new session."""
    return (worker.auth_token, tuple(sorted(worker.headers.items())), worker.tls_verify, worker.tls_ca_file)


def _ssl_setting(worker: WorkerConfig) -> ssl.SSLContext | bool:
    """The TLS setting for aiohttp: system CAs plus the worker's bundle, or no verification at all."""
    if not worker.tls_verify:
        return False
    if worker.tls_ca_file is None:
        return True
    context = ssl.create_default_context()
    try:
        context.load_verify_locations(cafile=worker.tls_ca_file)
    except (OSError, ssl.SSLError) as error:
        raise WorkerOffline(worker.name, f"CA bundle {worker.tls_ca_file} could not be loaded ({error})", stage="tls") from None
    return context


async def _refuse_redirect(session: aiohttp.ClientSession, context: Any, params: aiohttp.TraceRequestRedirectParams) -> None:
    """Runs when aiohttp is about to follow a redirect, on any request or websocket of a worker's
    session; raising stops it before anything is sent to the new address."""
    params.response.close()
    raise RedirectRefused(params.response.status, params.response.headers.get("Location", ""))


def _no_redirects() -> aiohttp.TraceConfig:
    config = aiohttp.TraceConfig()
    config.on_request_redirect.append(_refuse_redirect)
    return config


def session_headers(worker: WorkerConfig) -> dict[str, str]:
    """Headers sent on every request and on the websocket: the custom ones, then the bearer token."""
    headers = dict(worker.headers)
    if worker.auth_token:
        headers["Authorization"] = f"Bearer {worker.auth_token}"
    return headers


@dataclass
class _PooledSession:
    settings: tuple
    session: aiohttp.ClientSession | None
    error: WorkerUnavailable | None


class ClientPool:
    """One keep-alive session per worker, built from its auth and TLS settings, closed with the application.

    A worker whose token, headers or TLS settings change gets a new session on its next request; the
    old one is closed in the background.
    """

    def __init__(self, max_answer_bytes: Callable[[], int] = lambda: DEFAULT_MAX_ANSWER_MIB << 20) -> None:
        """`max_answer_bytes`: the answer cap in force (settings.max_answer_mib), asked at each new client."""
        self._pooled: dict[str, _PooledSession] = {}
        self._closing: set[asyncio.Task] = set()
        self._max_answer_bytes = max_answer_bytes

    def client(self, worker: WorkerConfig) -> WorkerClient:
        pooled = self._pooled.get(worker.id)
        settings = _connection_settings(worker)
        if pooled is None or pooled.settings != settings or (pooled.session is not None and pooled.session.closed):
            if pooled is not None:
                self._close_later(pooled)
            pooled = self._build(worker, settings)
            self._pooled[worker.id] = pooled
        if pooled.session is None:
            return WorkerClient(worker, None, pooled.error)
        return WorkerClient(worker, pooled.session, max_answer_bytes=self._max_answer_bytes())

    async def forget(self, worker_id: str) -> None:
        pooled = self._pooled.pop(worker_id, None)
        if pooled is not None and pooled.session is not None:
            await pooled.session.close()

    async def close(self) -> None:
        pooled, self._pooled = list(self._pooled.values()), {}
        for entry in pooled:
            if entry.session is not None:
                await entry.session.close()
        await asyncio.gather(*self._closing, return_exceptions=True)

    def _build(self, worker: WorkerConfig, settings: tuple) -> _PooledSession:
        try:
            ssl_setting = _ssl_setting(worker)
        except WorkerOffline as error:
            logger.warning("Worker %s: %s", worker.name, error.cause)
            return _PooledSession(settings, None, error)
        for warning in connection_warnings(worker):
            logger.warning("Worker %s: %s", worker.name, warning)
        session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=16, ssl=ssl_setting), timeout=client_timeout(), headers=session_headers(worker),
            trace_configs=[_no_redirects()],
        )
        return _PooledSession(settings, session, None)

    def _close_later(self, pooled: _PooledSession) -> None:
        if pooled.session is None or pooled.session.closed:
            return
        task = asyncio.ensure_future(pooled.session.close())
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)
