"""The model routes of a worker that runs this extension, as the master calls them.

    GET  /distributed/models                  the worker's model files (sizes; sha256 with ?sha256=1; ?files=0: free space only)
    GET  /distributed/models/upload           where an upload stands (absent, partial + offset, present)
    PUT  /distributed/models/upload           one chunk of a file, at an offset
    POST /distributed/models/upload/finish    check the sha256 and put the file in place

A stock worker answers 404 to the first: it has no sizes to report and cannot receive files. The
worker's error answers become our errors here, each naming the worker.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from ...errors import (
    BadResult,
    ModelFileConflict,
    ModelFileError,
    ModelHashMismatch,
    ModelPathRefused,
    NoSpaceForModel,
    WorkerOffline,
)
from ...workers.client import WorkerClient

MODELS_PATH = "/distributed/models"
UPLOAD_PATH = "/distributed/models/upload"
FINISH_PATH = "/distributed/models/upload/finish"
LISTING_READ_TIMEOUT = 30.0
HASHING_READ_TIMEOUT = 3600.0
"""A worker hashing its whole library the first time reads every byte of it."""
CHUNK_READ_TIMEOUT = 120.0
FINISH_READ_TIMEOUT = 900.0
"""After a restart the worker hashes the whole received file from disk before it answers."""

ERRORS_BY_STATUS: dict[int, type[ModelFileError]] = {
    400: ModelPathRefused,
    409: ModelFileConflict,
    422: ModelHashMismatch,
    507: NoSpaceForModel,
}


def _raise_for(client: WorkerClient, status: int, body: Any, what: str) -> None:
    message = body.get("error") if isinstance(body, dict) and isinstance(body.get("error"), str) else f"HTTP {status}"
    if status in (401, 403, 407):
        raise WorkerOffline(client.name, f"{what} answered HTTP {status}: {message}; check this worker's auth token and headers",
                            stage="auth")
    if status == 404:
        raise ModelFileError(f"worker '{client.name}' cannot receive models: it does not run this extension")
    kind = ERRORS_BY_STATUS.get(status)
    if kind is not None:
        raise kind(f"worker '{client.name}': {message}")
    if status >= 500:
        raise WorkerOffline(client.name, f"{what} answered HTTP {status}: {message}")
    raise BadResult(client.name, f"{what} answered HTTP {status}: {message}")


async def listing(client: WorkerClient, with_files: bool = True, with_sha256: bool = False) -> dict[str, Any] | None:
    """The worker's model files and free space (only the space without files), or None for a stock worker."""
    params = {"files": "1" if with_files else "0", "sha256": "1" if with_sha256 else "0"}
    status, body = await client.send("GET", MODELS_PATH, params=params,
                                     read_timeout=HASHING_READ_TIMEOUT if with_sha256 else LISTING_READ_TIMEOUT)
    if status == 404:
        return None
    if status != 200:
        _raise_for(client, status, body, f"GET {MODELS_PATH}")
    if not isinstance(body, dict) or not isinstance(body.get("files"), list):
        raise BadResult(client.name, f"GET {MODELS_PATH} answered HTTP {status} without a file list")
    return body


def upload_params(kind: str, name: str, size: int, key: str, **more: str) -> dict[str, str]:
    return {"folder": kind, "name": name, "size": str(size), "key": key, **more}


async def upload_status(client: WorkerClient, params: dict[str, str]) -> dict[str, Any]:
    status, body = await client.send("GET", UPLOAD_PATH, params=params)
    if status != 200 or not isinstance(body, dict):
        _raise_for(client, status, body, f"GET {UPLOAD_PATH}")
    return body  # type: ignore[return-value]


async def send_chunk(client: WorkerClient, params: dict[str, str], offset: int, body: AsyncIterator[bytes]) -> int:
    """Sends bytes from `offset`; returns the worker's new length of the partial."""
    status, answer = await client.send("PUT", UPLOAD_PATH, params={**params, "offset": str(offset)}, data=body,
                                       read_timeout=CHUNK_READ_TIMEOUT, data_size=max(int(params["size"]) - offset, 1))
    if status != 200 or not isinstance(answer, dict) or not isinstance(answer.get("offset"), int):
        _raise_for(client, status, answer, f"PUT {UPLOAD_PATH}")
    return int(answer["offset"])


async def finish(client: WorkerClient, params: dict[str, str], sha256: str) -> dict[str, Any]:
    status, body = await client.send("POST", FINISH_PATH, params={**params, "sha256": sha256}, read_timeout=FINISH_READ_TIMEOUT,
                                     data_size=max(int(params["size"]), 1))  # the worker hashes the whole file before it answers
    if status != 200 or not isinstance(body, dict):
        _raise_for(client, status, body, f"POST {FINISH_PATH}")
    return body  # type: ignore[return-value]

