"""Errors raised by the distributed extension.

Every error names what it is about (a worker, a share, a node) so that a message reaching the user
says which participant failed and why, without digging through logs.

    DistributedError
    ├── ConfigError                the registry file or a request body is invalid
    │   └── RegistryConflict       a write was refused: the file on disk is invalid or changed
    ├── UnknownWorker              a worker id that is not in the registry
    ├── UnknownPool                a pool name that is not in the registry
    ├── PlanError                  the prompt cannot be split (e.g. a seed that is not a literal)
    ├── WorkerUnavailable          "not now, try elsewhere": the share goes to another participant
    │   ├── WorkerOffline          connection refused, DNS failure, timeout
    │   ├── WorkerRejected         the worker's /prompt answered 400 (missing node or model)
    │   ├── WorkerFailed           the worker ran the share and reported an execution error
    │   ├── WorkerLost             the worker died, froze or dropped the connection mid-run
    │   │   └── WorkerStalled      the worker answers, but its share shows no progress (hung in a node)
    │   └── BadResult              the worker answered with something that is not a valid result
    ├── ProcessError               a local worker could not be launched or controlled
    ├── JobFailed                  no participant could deliver a share; the prompt fails
    └── ModelFileError             a model file cannot be received, stored or copied
        ├── ModelPathRefused       a name outside the model folders: traversal, absolute, symlink out
        ├── ModelFileConflict      a different file of that name exists, or it is being received
        ├── NoSpaceForModel        the model folder lacks the free space for the file
        └── ModelHashMismatch      the file received does not have the sha256 it was sent with
"""

from __future__ import annotations


class DistributedError(Exception):
    """Base of every error this extension raises on purpose."""


class ConfigError(DistributedError):
    """Raised when the registry file or a request body does not validate.

    `field` is the dotted location of the first bad value ("workers.0.port"), for a 400 that names it.
    """

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class RegistryConflict(ConfigError):
    """Raised when a write is refused because the file on disk is invalid; nothing is written."""


class UnknownWorker(DistributedError):
    """Raised when a request names a worker id that the registry does not hold."""

    def __init__(self, worker_id: str) -> None:
        super().__init__(f"no worker with id '{worker_id}'")
        self.worker_id = worker_id


class UnknownPool(DistributedError):
    """Raised when a request names an elastic pool that the registry does not hold."""

    def __init__(self, name: str) -> None:
        super().__init__(f"no pool named '{name}'")
        self.name = name


class PlanError(DistributedError):
    """Raised when a prompt holding a collector cannot be split into shares."""


class WorkerUnavailable(DistributedError):
    """Raised when a worker cannot deliver a share now; the share is given to another participant."""

    def __init__(self, worker_name: str, cause: str, stage: str = "http") -> None:
        super().__init__(f"worker '{worker_name}': {cause}")
        self.worker_name = worker_name
        self.cause = cause
        self.stage = stage
        """What failed, for "Test connection": dns, refused, timeout, tls, auth, not_comfyui, http."""


class WorkerOffline(WorkerUnavailable):
    """Raised when a worker cannot be reached (refused, DNS, connect or read timeout)."""


class WorkerRejected(WorkerUnavailable):
    """Raised when a worker refuses the prompt, typically a node class or model it lacks."""


class WorkerFailed(WorkerUnavailable):
    """Raised when a worker reports an execution error while running a share."""


class WorkerLost(WorkerUnavailable):
    """Raised when a worker dies, freezes or drops its connection while running a share."""


class WorkerStalled(WorkerLost):
    """Raised when a worker's share shows no execution or progress event for the stall time."""


class BadResult(WorkerUnavailable):
    """Raised when a worker's answer is not a valid result (not JSON, broken image, wrong size)."""


class ProcessError(DistributedError):
    """Raised when a local worker process cannot be launched, stopped or adopted."""


class JobFailed(DistributedError):
    """Raised when a share could not be delivered by any participant; the prompt fails with it."""


class ModelFileError(DistributedError):
    """Raised when a model file cannot be listed, received, stored or copied."""


class ModelPathRefused(ModelFileError):
    """Raised when a model file name or folder kind would write outside the model folders.

    `field` names the request parameter ("name", "folder") for a 400 that points at it.
    """

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class ModelFileConflict(ModelFileError):
    """Raised when a different file of the same name exists, or the file is being received already."""


class NoSpaceForModel(ModelFileError):
    """Raised when a model folder lacks the free space for a file, before or while it is written."""


class ModelHashMismatch(ModelFileError):
    """Raised when a received file's sha256 differs from the one it was sent with; it is deleted."""


def error_body(message: str, field: str | None = None) -> dict[str, str | None]:
    """The one JSON shape of every error this extension answers over HTTP: `field` names the bad
    input (a dotted path such as "workers.0.port"), or is null."""
    return {"error": message, "field": field}
