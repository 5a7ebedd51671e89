"""The data types both ends of a share need: what to run, which slice of a batch, what came back.

They sit at the bottom of the package so that `jobs/` (which plans and schedules shares) and
`transport/` (which runs one share on one worker) agree on them without importing each other.
"""

from __future__ import annotations

import enum
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any

import numpy as np

PRECISIONS = ("uint8", "float16", "float32")
"""How images travel from a worker that runs this extension: uint8 is what a PNG holds; the floats
keep the worker's values unquantised."""


@dataclass(frozen=True)
class BatchSlice:
    """Images [start, start + length) of the single-instance batch."""

    start: int
    length: int

    def as_json(self) -> dict[str, int]:
        return {"start": self.start, "length": self.length}


@dataclass(frozen=True)
class AudioClip:
    """One share's audio: ComfyUI's AUDIO as numpy, a float32 waveform [batch, channels, samples]."""

    waveform: np.ndarray
    sample_rate: int


ShareOutput = np.ndarray | AudioClip
"""What one share delivers for one collector: an image batch [B, H, W, C] in 0..1, or a clip."""


@dataclass(frozen=True)
class InputImage:
    """An image a share loads, held by the master in memory (an upscale tile's pixels).

    A worker that runs this extension gets the pixels themselves, in the wire format; any other gets
    them as the PNG `file` in the master's input folder, written when first needed. Both end as the
    same float values, 8-bit ones as a PNG holds.
    """

    key: str
    """The SHA-256 of `pixels`' bytes: a worker keeps the image under it and checks it on arrival."""
    pixels: np.ndarray
    """uint8 [H, W, 3], read-only."""
    file: str
    """Where its PNG goes, relative to the master's input folder."""


@dataclass(frozen=True)
class ShareWork:
    """Everything a worker needs to render one share, and how its outputs must come back."""

    prompt: dict[str, dict[str, Any]]
    """The share's prompt, in ComfyUI's API format, holding only stock nodes."""
    collector_ids: tuple[str, ...]
    """The nodes whose outputs are the share's results (they keep the collectors' node ids)."""
    audio_ids: tuple[str, ...] = ()
    """Those of `collector_ids` that deliver audio; the rest deliver images."""
    precisions: dict[str, str] = field(default_factory=dict)
    """Collector node id -> how its images travel from a worker with this extension (PRECISIONS)."""
    max_images: int | None = None
    """The most images the share may return per collector: its batch slice's length in split mode."""
    image_sizes: dict[str, tuple[int, ...]] = field(default_factory=dict)
    """Collector node id -> the image size [H, W, C] every share must return, once the master's own
    share has shown it. With `max_images` and the settings' caps, what a worker's answer is checked
    against before the master allocates anything for it."""
    inputs: dict[str, InputImage] = field(default_factory=dict)
    """Node id of a `LoadImage` in `prompt` -> the image it loads, when the master holds it in memory."""
    ahead: tuple[InputImage, ...] = ()
    """Images the next shares will load: their PNGs are written meanwhile for workers that take files."""


@dataclass(frozen=True)
class ShareProgress:
    """Where a running share stands: step `value` of `max` in `node`, after `done` of `total` nodes.

    `fraction` weighs them as ComfyUI's own progress does: every node counts one, the running node by
    the share of its steps done, so a prompt without a sampler still moves from 0 to 1.
    """

    value: int
    max: int
    node: str | None = None
    done: int = 0
    total: int = 0
    ran: bool = False
    """The worker has finished running the share; its outputs are being fetched."""

    @classmethod
    def of(cls, value: Any, maximum: Any, node: Any, done: int = 0, total: int = 0) -> ShareProgress:
        """From a progress event, whose fields are not to be trusted."""
        steps = maximum if isinstance(maximum, int | float) and not isinstance(maximum, bool) and maximum > 0 else 1
        current = value if isinstance(value, int | float) and not isinstance(value, bool) else 0
        return cls(int(min(max(current, 0), steps)), int(steps), str(node)[:100] if node is not None else None, done, total)

    @property
    def fraction(self) -> float:
        step = self.value / self.max if self.max else 0.0
        if self.total <= 0:
            return step
        return min(1.0, (min(self.done, self.total) + step) / self.total)

    def as_json(self) -> dict[str, Any]:
        return {"value": self.value, "max": self.max, "node": self.node, "done": self.done, "total": self.total,
                "fraction": round(self.fraction, 4)}


class NodeCount:
    """Counts the nodes of one prompt as their events arrive, for ShareProgress.done. Only the prompt's
    own node ids count: a worker that names other nodes cannot push `done` past `total`."""

    def __init__(self, nodes: Collection[str]) -> None:
        self._nodes = frozenset(nodes)
        self.total = len(self._nodes)
        self._finished: set[str] = set()
        self._running: str | None = None
        self._value, self._max = 0, 1

    def started(self, node: str) -> ShareProgress:
        if node not in self._nodes:
            return self._now()
        if self._running is not None and self._running != node:
            self._finished.add(self._running)
        self._running, self._value, self._max = node, 0, 1
        return self._now()

    def stepped(self, node: str | None, value: Any, maximum: Any) -> ShareProgress:
        if node is not None and node != self._running:
            self.started(node)
        if node is not None and node not in self._nodes:
            return self._now()
        progress = ShareProgress.of(value, maximum, node)
        self._value, self._max = progress.value, progress.max
        return self._now()

    def cached(self, nodes: Any) -> ShareProgress:
        """Nodes ComfyUI took from its cache count as done."""
        if isinstance(nodes, list):
            self._finished.update(str(node) for node in nodes if isinstance(node, str | int) and str(node) in self._nodes)
        return self._now()

    def finished(self, node: str) -> ShareProgress:
        if node not in self._nodes:
            return self._now()
        self._finished.add(node)
        if self._running == node:
            self._running, self._value, self._max = None, 0, 1
        return self._now()

    def _now(self) -> ShareProgress:
        return ShareProgress(self._value, self._max, self._running, len(self._finished), self.total)


@dataclass(frozen=True)
class ShareResult:
    """What a worker delivered for one share, with what its run says about the worker's state."""

    outputs: dict[str, ShareOutput]
    """Collector node id -> that collector's output."""
    cached_nodes: frozenset[str] = frozenset()
    """Nodes the worker reused from its cache instead of running them: a worker that reused the
    seed-independent part of the graph (the model loaders) ran warm."""


class ShareState(enum.StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"


class RunState(enum.StrEnum):
    """How one copy of a share ended (or that it still runs)."""

    RUNNING = "running"
    WON = "won"
    """Delivered first: its output is the share's."""
    CANCELLED = "cancelled"
    """Stopped because the other copy delivered first, or its participant failed another share."""
    FAILED = "failed"


@dataclass
class ShareRun:
    """One copy of a share on one participant. A share has one run, and a second while a backup copy
    races a participant that lags far behind what its speed predicted."""

    participant: str
    claimed_at: float
    expected_seconds: float
    """What the speed model expected the run to take when it was handed out."""
    started_at: float | None = None
    """When its worker reported the first event of it (it left the worker's queue)."""
    ran_seconds: float | None = None
    """How long its worker ran it, once it reported the end (its outputs are then being fetched):
    the share's time, without the fetch or a worker's pause between prompts."""
    progress: ShareProgress | None = None
    state: RunState = RunState.RUNNING
    backup_reason: str | None = None
    """Set on a backup copy: why it was started ("Studio PC is 4x slower than usual")."""
    cold: bool = False
    """The participant's first run of the workflow: it probably loads models, so it is judged against
    other first runs, and what it shows says nothing of its warm speed."""


@dataclass
class Share:
    """One unit of a job, delivered by exactly one participant in the end. Lives on the server loop."""

    index: int
    batch: BatchSlice | None = None
    """Split mode: the slice of the single-instance batch this share renders."""
    intended: str | None = None
    """Fan-out: the participant this share was dealt to (it goes elsewhere only if that one cannot take it)."""
    state: ShareState = ShareState.PENDING
    runs: list[ShareRun] = field(default_factory=list)
    """Every copy handed out, oldest first; those still RUNNING are the share's live copies."""
    delivered_by: str | None = None
    attempts: list[str] = field(default_factory=list)
    """One line per failed attempt: "worker 'x': cause"."""

    @property
    def units(self) -> int:
        return self.batch.length if self.batch else 1

    def live_runs(self) -> list[ShareRun]:
        return [run for run in self.runs if run.state == RunState.RUNNING]

    def run_of(self, participant: str) -> ShareRun | None:
        """The live copy on `participant`, if any."""
        return next((run for run in self.live_runs() if run.participant == participant), None)

    @property
    def participant(self) -> str | None:
        """Who delivered the share, else who runs its first live copy."""
        if self.delivered_by is not None:
            return self.delivered_by
        live = self.live_runs()
        return live[0].participant if live else None

    @property
    def progress(self) -> ShareProgress | None:
        live = self.live_runs()
        return live[0].progress if live else None
