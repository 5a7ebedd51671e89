"""workers.json: the one store of worker configuration, safe against hand edits and crashes.

The file is the truth. Every read notices a hand edit (by its stat signature) and reloads it; every
write re-reads the file first and applies the change to what is on disk, so an edit made by hand
between two API calls is kept rather than overwritten. An invalid file is reported (log, API, panel)
and never overwritten: the last valid content stays in use and writes are refused until it is fixed.
Writes go to a temporary file that replaces the real one atomically, after the previous valid
content was kept as `workers.json.bak`; both are readable by the user only (0600), as they hold tokens.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import tempfile
from collections.abc import Callable
from pathlib import Path

from pydantic import ValidationError

from ..errors import ConfigError, RegistryConflict, UnknownWorker
from .models import RegistryFile, WorkerConfig
from .validation import describe_validation_error

logger = logging.getLogger(__name__)

Listener = Callable[[RegistryFile], None]
UPDATE_ATTEMPTS = 3
WATCH_SECONDS = 1.0


def parse_registry(text: str) -> RegistryFile:
    """Parses the file's text; raises ConfigError naming the bad field or JSON position."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise ConfigError(f"not valid JSON: {error.msg} at line {error.lineno} column {error.colno}") from None
    try:
        return RegistryFile.model_validate(data)
    except ValidationError as error:
        raise describe_validation_error(error, also=duplicates(data)) from None


def duplicates(data: object) -> list[str]:
    """Ids, local ports and pool names used twice, read from the raw file: the model checks them only once every
    field is valid, and a hand-edited file should hear of all its problems at once."""
    workers = data.get("workers") if isinstance(data, dict) else None
    entries = [entry for entry in workers if isinstance(entry, dict)] if isinstance(workers, list) else []
    problems, ids, ports = [], set(), set()
    for entry in entries:
        worker_id, port = entry.get("id"), entry.get("port")
        if isinstance(worker_id, str):
            if worker_id in ids:
                problems.append(f"workers: duplicate worker id '{worker_id}'")
            ids.add(worker_id)
        if entry.get("type") == "local" and isinstance(port, int):
            if port in ports:
                problems.append(f"workers: two local workers use port {port}")
            ports.add(port)
    pools = data.get("pools") if isinstance(data, dict) else None
    names = [entry.get("name") for entry in pools if isinstance(entry, dict)] if isinstance(pools, list) else []
    problems += [f"pools: duplicate pool name '{name}'" for name in sorted({n for n in names if isinstance(n, str) and names.count(n) > 1})]
    return problems


class Registry:
    """Loads, validates, watches and writes workers.json."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._config = RegistryFile()
        self._signature: tuple[int, int] | None = None
        self._error: str | None = None
        self._listeners: list[Listener] = []
        self.refresh()

    @property
    def error(self) -> str | None:
        """Why the file on disk is not in use, or None when it is valid."""
        return self._error

    def subscribe(self, listener: Listener) -> None:
        """Calls `listener` with the new configuration after each change, by hand or by API."""
        self._listeners.append(listener)

    def snapshot(self) -> RegistryFile:
        """The configuration in force, reloaded first if the file changed on disk."""
        self.refresh()
        return self._config

    def worker(self, worker_id: str) -> WorkerConfig:
        worker = self.snapshot().worker(worker_id)
        if worker is None:
            raise UnknownWorker(worker_id)
        return worker

    def refresh(self) -> bool:
        """Reloads the file if its signature changed; returns True when the configuration changed."""
        signature = self._stat()
        if signature is None:
            if self._signature is None and self._error is None and not self.path.exists():
                logger.info("Creating %s with defaults", self.path)
                self._write(RegistryFile())
                return False
            signature = (0, 0)
        if signature == self._signature:
            return False
        self._signature = signature
        try:
            config = parse_registry(self.path.read_text(encoding="utf-8"))
        except (ConfigError, OSError) as error:
            message = f"{self.path.name} is invalid and was not loaded ({error}); fix the file, it is never overwritten"
            if message != self._error:
                logger.error("%s", message)
                self._error = message
                self._notify()
            return False
        if self._error is not None:
            logger.info("%s is valid again", self.path.name)
        changed = config != self._config or self._error is not None
        self._error = None
        self._config = config
        if changed:
            self._notify()
        return changed

    async def watch(self, interval: float = WATCH_SECONDS) -> None:
        """Notices hand edits within `interval` seconds, even when nothing reads the registry; runs
        until cancelled."""
        while True:
            self.refresh()
            await asyncio.sleep(interval)  # a poll of the file's signature, not synchronisation

    def update(self, change: Callable[[RegistryFile], RegistryFile]) -> RegistryFile:
        """Applies `change` to the file as it is on disk now, validates, and writes it atomically.

        `change` gets a deep copy and returns the new configuration. It raises ConfigError (nothing is
        written) when the result is invalid, and RegistryConflict when the file on disk is invalid. If
        the file is edited by hand while the change is computed, the change is applied again to that.
        """
        for _ in range(UPDATE_ATTEMPTS):
            self.refresh()
            if self._error is not None:
                raise RegistryConflict(self._error)
            read_signature = self._signature
            proposed = change(self._config.model_copy(deep=True))
            try:
                validated = RegistryFile.model_validate(proposed.model_dump())
            except ValidationError as error:
                raise describe_validation_error(error) from None
            if self._stat() not in (read_signature, None):
                continue  # edited by hand meanwhile: apply the change to that version
            self._write(validated)
            self._config = validated
            self._notify()
            return validated
        raise RegistryConflict(f"{self.path.name} kept changing on disk while saving; nothing was written, try again")

    def new_worker_id(self, name: str) -> str:
        """A readable id derived from the name, made unique."""
        base = re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-.").lower()[:48] or "worker"
        if not base[0].isalnum():
            base = f"w{base}"
        taken = {worker.id for worker in self.snapshot().workers}
        candidate, suffix = base, 2
        while candidate in taken:
            candidate, suffix = f"{base}-{suffix}", suffix + 1
        return candidate

    def _stat(self) -> tuple[int, int] | None:
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            return None
        return (stat.st_mtime_ns, stat.st_size)

    def _write(self, config: RegistryFile) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.exists() and self._error is None:
            try:
                self._replace(self.path.with_name(self.path.name + ".bak"), self.path.read_bytes())
            except OSError as error:
                logger.warning("Could not keep a backup of %s: %s", self.path, error)
        self._replace(self.path, (json.dumps(config.model_dump(mode="json"), indent=2) + "\n").encode("utf-8"))
        self._signature = self._stat()

    def _replace(self, target: Path, data: bytes) -> None:
        """Writes `data` to a new file readable by this user only (mkstemp makes it 0600: the file
        holds tokens) that then replaces `target` atomically."""
        handle, temp_path = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
        try:
            with os.fdopen(handle, "wb") as file:
                file.write(data)
                file.flush()
                os.fsync(file.fileno())
            os.replace(temp_path, target)
        except BaseException:
            Path(temp_path).unlink(missing_ok=True)
            raise

    def _notify(self) -> None:
        for listener in self._listeners:
            try:
                listener(self._config)
            except Exception:
                logger.exception("A registry listener failed")
