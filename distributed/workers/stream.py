"""The messages of one open websocket to a worker ComfyUI."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any

import aiohttp

from ..errors import WorkerLost
from .failures import parse_json

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Message:
    """One websocket message from a worker ComfyUI (`{"type": ..., "data": {...}}`)."""

    type: str
    data: dict[str, Any]



class EventStream:
    """The messages of one open worker websocket."""

    def __init__(self, worker_name: str, ws: aiohttp.ClientWebSocketResponse) -> None:
        self._name = worker_name
        self._ws = ws

    async def receive(self, timeout: float | None = None) -> Message | None:
        """The next JSON message, or None when `timeout` seconds pass without one.

        Raises WorkerLost when the websocket closes, fails or misses its heartbeat.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                return None
            try:
                message = await self._ws.receive(timeout=left)
            except TimeoutError:
                if self._ws.closed:
                    raise WorkerLost(self._name, "stopped answering websocket heartbeats") from None
                return None
            except (aiohttp.ClientError, OSError) as error:
                raise WorkerLost(self._name, f"websocket failed: {error or type(error).__name__}") from None
            if message.type == aiohttp.WSMsgType.TEXT:
                try:
                    payload = parse_json(message.data)
                except ValueError:
                    logger.debug("Ignoring a non-JSON websocket message from %s", self._name)
                    continue
                if isinstance(payload, dict) and isinstance(payload.get("type"), str):
                    data = payload.get("data")
                    return Message(payload["type"], data if isinstance(data, dict) else {})
            elif message.type == aiohttp.WSMsgType.BINARY:
                continue  # previews; not needed
            else:
                frozen = isinstance(self._ws.exception(), (asyncio.TimeoutError, aiohttp.ServerTimeoutError))
                raise WorkerLost(self._name, "stopped answering websocket heartbeats" if frozen else "closed its websocket")
