"""The panel's actions on a host's workers, carried to the host's own API and its answers back.

The managing master holds the host's API token (the host entry's `auth_token`), so it may ask the
host anything its own user may: launch, stop or restart a worker, read its log, add one on a free
GPU, remove one, choose where it listens. Each request goes through the host entry's client (its
token, deadlines, size cap, no redirects). What the host refuses comes back as the same kind of
error, naming the host: 400 with the field it named, 404, 409; a host that cannot be reached, or
refuses the token, is a 502.
"""

from __future__ import annotations

from typing import Any

from ...config.models import WorkerConfig
from ...errors import ConfigError, ProcessError, UnknownWorker, WorkerOffline, WorkerUnavailable
from ..pool import ClientPool

ACTION_READ_TIMEOUT = 45.0
"""A stop or restart on the host waits for the worker's process to end (up to its stop timeout)."""
MAX_MESSAGE = 500


class HostRelay:
    """Sends one request to a host's /distributed API and turns its refusals into our errors."""

    def __init__(self, clients: ClientPool) -> None:
        self._clients = clients

    async def call(self, host: WorkerConfig, method: str, path: str, body: Any = None, params: dict[str, str] | None = None,
                   worker_id: str | None = None) -> Any:
        """The host's JSON answer to one request; `worker_id` is the host's worker the request is about."""
        client = self._clients.client(host)
        try:
            status, answer = await client.send(method, path, json_body=body, params=params, read_timeout=ACTION_READ_TIMEOUT)
        except WorkerUnavailable as error:
            raise WorkerOffline(host.name, f"the host could not be asked: {error.cause}", stage=error.stage) from None
        if 200 <= status < 300:
            return answer
        said = answer.get("error") if isinstance(answer, dict) else None
        message = f"host '{host.name}': {said[:MAX_MESSAGE] if isinstance(said, str) else f'{method} {path} answered HTTP {status}'}"
        field = answer.get("field") if isinstance(answer, dict) else None
        if status == 400:
            raise ConfigError(message, field=field if isinstance(field, str) else None)
        if status == 404 and worker_id is not None:
            raise UnknownWorker(worker_id)
        if status == 409:
            raise ProcessError(message)
        if status in (401, 403):
            raise WorkerOffline(host.name, f"the host refused the request ({status}): {message}; is this entry's token the host's "
                                "DISTRIBUTED_API_TOKEN?", stage="auth")
        raise WorkerOffline(host.name, f"{method} {path} answered HTTP {status}: {message}")
