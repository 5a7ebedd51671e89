"""The Distributed Collectors (images, audio) and the nodes a collector expands into for shares the
master renders itself.

They run on ComfyUI's execution thread and reach the job only through the bridge (`bridge.bound()`),
which hands back immutable outcomes. In a ComfyUI that is not a master (a local worker loads the
same custom nodes), the bridge is unbound and a collector passes its input through.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import comfy.model_management
import comfy.utils
import torch

from ..errors import DistributedError
from ..graph import ancestors
from ..jobs import collect
from ..jobs.outcomes import CollectorOutcome
from ..jobs.plan import JOB_INPUT, MAX_SHARES, PRECISION_INPUT, SHARES_INPUT, SPLIT_INPUT
from ..jobs.provenance import image_origins
from ..shares import PRECISIONS, AudioClip
from .bridge import Interrupted, JobBridge, bound
from .master_progress import follow_master_share
from .provenance import ORIGINS
from .result_sink import comfy_prompt_id

SHARES_OPTION = ("INT", {
    "default": 0, "min": 0, "max": MAX_SHARES,
    "tooltip": "How many shares to render in all; 0 = one per participant. Shares go to whichever GPU frees up first.",
})


def interrupted() -> bool:
    return comfy.model_management.processing_interrupted()


def job_of(prompt: dict[str, Any] | None, unique_id: str | None) -> tuple[JobBridge, str] | None:
    """The master's bridge and the job a collector node was tagged with, or None (pass through)."""
    bridge = bound()
    node = (prompt or {}).get(str(unique_id)) or {}
    job_id = node.get("inputs", {}).get(JOB_INPUT)
    return (bridge, job_id) if isinstance(job_id, str) and bridge is not None else None


def as_node_error(title: str, error: DistributedError) -> RuntimeError:
    return RuntimeError(f"{title}: {error}")


class DistributedCollector:
    """Joins the master's images with every worker's into one batch, in a fixed order.

    `images` is lazy: the collector starts the workers before the master renders its own share, and
    the master skips its share entirely when it only orchestrates.
    """

    TITLE = "Distributed Collector"
    KIND = "images"
    DESCRIPTION = (
        "Runs the graph above it on every enabled worker too and collects all images: "
        "the master's first, then each share in order."
    )
    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "collect"
    CATEGORY = "distributed"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {"images": ("IMAGE", {"lazy": True})},
            "optional": {
                SHARES_INPUT: SHARES_OPTION,
                SPLIT_INPUT: ("BOOLEAN", {
                    "default": False,
                    "tooltip": "Split the EmptyLatentImage batch across GPUs by speed: the same pictures one GPU would make.",
                }),
                PRECISION_INPUT: (list(PRECISIONS), {
                    "default": PRECISIONS[0],
                    "tooltip": "How images travel from workers that run this extension: uint8 is what a PNG holds; "
                               "float16/float32 keep the worker's values unquantised (2x/4x the bytes). Stock workers always send PNG.",
                }),
            },
            "hidden": {"unique_id": "UNIQUE_ID", "prompt": "PROMPT"},
        }

    def check_lazy_status(self, unique_id: str | None = None, prompt: dict | None = None, **inputs: Any) -> list[str]:
        """Starts the job's remote shares before the master renders its own; the input is needed
        only when the master takes part."""
        tagged = job_of(prompt, unique_id)
        if tagged is None:
            return [self.KIND]
        bridge, job_id = tagged
        try:
            master_renders = bridge.start_job(job_id, interrupted)
        except Interrupted:
            raise comfy.model_management.InterruptProcessingException() from None
        except DistributedError as error:
            raise as_node_error(self.TITLE, error) from None
        if master_renders and prompt:
            follow_master_share(bridge, job_id, ancestors(prompt, [str(unique_id)]))
        return [self.KIND] if master_renders else []

    def collect(self, unique_id: str | None = None, prompt: dict | None = None, **inputs: Any) -> Any:
        mine = inputs.get(self.KIND)
        tagged = job_of(prompt, unique_id)
        if tagged is None:
            return (mine,)
        bridge, job_id = tagged
        collector_id = str(unique_id)
        outcome = wait_for_shares(bridge, job_id, collector_id, self.master_shape(mine), mine, self.TITLE)
        if outcome.fallback is not None:
            return {"result": ([outcome.fallback.last_node, 0],), "expand": outcome.fallback.graph}
        return (join(bridge, job_id, collector_id, self.KIND, outcome, mine),)

    def master_shape(self, mine: Any) -> tuple[int, ...] | None:
        """The size every share's images must have: the master's own, [H, W, C]."""
        return tuple(mine.shape[1:]) if mine is not None else None


class DistributedAudioCollector(DistributedCollector):
    """Joins the master's audio with every worker's into one AUDIO batch, in a fixed order.

    Audio comes back only from workers that run this extension too (its result sink carries the
    waveform); a stock worker is skipped for audio shares, with the reason in the job's attempts.
    """

    TITLE = "Distributed Audio Collector"
    KIND = "audio"
    DESCRIPTION = (
        "Runs the graph above it on every enabled worker that has ComfyUI Distributed GPU too and collects all audio "
        "into one batch: the master's first, then each share in order; shorter clips are padded with silence."
    )
    RETURN_TYPES = ("AUDIO",)

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {"audio": ("AUDIO", {"lazy": True})},
            "optional": {SHARES_INPUT: SHARES_OPTION},
            "hidden": {"unique_id": "UNIQUE_ID", "prompt": "PROMPT"},
        }

    def master_shape(self, mine: Any) -> tuple[int, ...] | None:
        return None  # clips of different lengths are joined by padding: no size to agree on


class DistributedMasterShare:
    """Renders on the master a share no worker could deliver; added by a collector's expansion.

    Each hands its share's output to the job; the last of the chain (`last`) then joins the whole
    batch, which becomes the collector's output. The job takes the output only with the `token` its
    expansion was given, so the node cannot be driven from a prompt of anyone else.
    """

    KIND = "images"
    TITLE = "Distributed Collector"
    DESCRIPTION = "Added by a Distributed Collector for a share the master renders itself; not for use in workflows."
    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "deliver"
    CATEGORY = "distributed/internal"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        data_type = cls.RETURN_TYPES[0]
        return {
            "required": {
                cls.KIND: (data_type,),
                "job_id": ("STRING", {"default": ""}),
                "collector_id": ("STRING", {"default": ""}),
                "share_index": ("INT", {"default": 1, "min": 0, "max": MAX_SHARES}),
                "last": ("BOOLEAN", {"default": True}),
                "token": ("STRING", {"default": ""}),
            },
            "optional": {"after": (data_type,)},
        }

    def deliver(self, job_id: str, collector_id: str, share_index: int, last: bool, token: str, after: Any = None,
                **output: Any) -> Any:
        bridge = bound()
        if bridge is None:
            raise RuntimeError(f"{self.TITLE}: this ComfyUI is not a distributed master")
        produced = output[self.KIND]
        result = (AudioClip(waveform_of(produced), int(produced["sample_rate"])) if self.KIND == "audio"
                  else produced.detach().float().cpu().numpy())
        progress = comfy.utils.ProgressBar(1, node_id=collector_id)
        try:
            outcome = bridge.deliver_master_share(job_id, share_index, collector_id, result, last, token, interrupted,
                                                  progress_reporter(bridge, job_id, progress))
        except Interrupted:
            raise comfy.model_management.InterruptProcessingException() from None
        except DistributedError as error:
            raise as_node_error(self.TITLE, error) from None
        if outcome is None:
            return (produced,)
        if outcome.fallback is not None:
            return {"result": ([outcome.fallback.last_node, 0],), "expand": outcome.fallback.graph}
        return (join(bridge, job_id, collector_id, self.KIND, outcome, outcome.master_part),)


class DistributedMasterAudioShare(DistributedMasterShare):
    """The audio collector's DistributedMasterShare."""

    KIND = "audio"
    TITLE = "Distributed Audio Collector"
    DESCRIPTION = "Added by a Distributed Audio Collector for a share the master renders itself; not for use in workflows."
    RETURN_TYPES = ("AUDIO",)


def wait_for_shares(bridge: JobBridge, job_id: str, collector_id: str, master_shape: tuple[int, ...] | None,
                    master_part: Any, title: str) -> CollectorOutcome:
    """Waits for every remote share of the job, showing progress on the collector node."""
    progress = comfy.utils.ProgressBar(1, node_id=collector_id)
    try:
        return bridge.collector_outcome(job_id, collector_id, master_shape, master_part, interrupted,
                                        progress_reporter(bridge, job_id, progress))
    except Interrupted:
        raise comfy.model_management.InterruptProcessingException() from None
    except DistributedError as error:
        raise as_node_error(title, error) from None


def progress_reporter(bridge: JobBridge, job_id: str, progress: Any) -> Callable[[], None]:
    """Shows the job's shares done on a node's progress bar, when called."""

    def report() -> None:
        latest = bridge.job_progress(job_id)
        if latest is not None and latest.total:
            progress.update_absolute(latest.done, latest.total)

    return report


def join(bridge: JobBridge, job_id: str, collector_id: str, kind: str, outcome: CollectorOutcome, mine: Any) -> Any:
    """The master's part, then every share's, as one batch; the job then lets go of them."""
    if kind == "audio":
        joined = join_audio(outcome, mine)
    else:
        joined = join_images(outcome, mine)
        record_origins(collector_id, outcome, mine)
    bridge.release_job(job_id, collector_id)
    return joined


def record_origins(collector_id: str, outcome: CollectorOutcome, images: torch.Tensor | None) -> None:
    """Notes which share made which image, for Save Image (Distributed) further down the prompt."""
    master = [(0, images.shape[0], outcome.master_batch)] if outcome.master_renders and images is not None else []
    parts = [(index, batch.shape[0], batch_slice) for (index, batch_slice), (_, batch) in zip(outcome.part_shares, outcome.parts,
                                                                                              strict=True)]
    ORIGINS.record(comfy_prompt_id(), collector_id, image_origins(master + parts))


def join_images(outcome: CollectorOutcome, images: torch.Tensor | None) -> torch.Tensor:
    try:
        labelled = ([("share 0 (master)", images)] if outcome.master_renders and images is not None else []) + [
            (label, torch.from_numpy(batch)) for label, batch in outcome.parts
        ]
        if not labelled:
            raise DistributedError("no participant produced images")
        collect.check_same_size([(label, tuple(batch.shape)) for label, batch in labelled])
    except DistributedError as error:
        raise as_node_error(DistributedCollector.TITLE, error) from None
    reference = labelled[0][1]
    return torch.cat([part.to(device=reference.device, dtype=reference.dtype) for _, part in labelled], dim=0)


def join_audio(outcome: CollectorOutcome, audio: dict[str, Any] | None) -> dict[str, Any]:
    try:
        clips = list(outcome.parts)
        if outcome.master_renders and audio is not None:
            clips.insert(0, ("share 0 (master)", AudioClip(waveform_of(audio), int(audio["sample_rate"]))))
        joined = collect.join_audio(clips)
    except DistributedError as error:
        raise as_node_error(DistributedAudioCollector.TITLE, error) from None
    return {"waveform": torch.from_numpy(joined.waveform), "sample_rate": joined.sample_rate}


def waveform_of(audio: dict[str, Any]) -> Any:
    return audio["waveform"].detach().float().cpu().numpy()
