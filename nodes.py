"""The extension's nodes: Distributed Seed, the Distributed Collectors (images, audio) and the queue's proxy.

They run on ComfyUI's execution thread. A collector reaches the server loop only through the
application object bound at start-up (`bind`), and only via `distributed.bridge`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

import comfy.model_management
import comfy.utils
import torch

from .distributed import collect
from .distributed.bridge import Interrupted
from .distributed.errors import DistributedError
from .distributed.fallback import fallback_graph
from .distributed.planner import JOB_INPUT, MAX_SHARES, PRECISION_INPUT, PRECISIONS, SEED_SPACE, SHARES_INPUT, SPLIT_INPUT

if TYPE_CHECKING:
    from .distributed.app import DistributedApp
    from .distributed.dispatch import Job

_app: DistributedApp | None = None


def bind(app: DistributedApp) -> None:
    """Gives the nodes the running application (called once by the package's __init__)."""
    global _app
    _app = app


def _job_id(prompt: dict[str, Any] | None, unique_id: str | None) -> str | None:
    node = (prompt or {}).get(str(unique_id)) or {}
    job_id = node.get("inputs", {}).get(JOB_INPUT)
    return job_id if isinstance(job_id, str) and _app is not None else None


SHARES_OPTION = ("INT", {
    "default": 0, "min": 0, "max": MAX_SHARES,
    "tooltip": "How many shares to render in all; 0 = one per participant. Shares go to whichever GPU frees up first.",
})


def _interrupted() -> bool:
    return comfy.model_management.processing_interrupted()


class DistributedSeed:
    """A seed that differs per share: the master's share uses it as is, share k uses seed + k."""

    DESCRIPTION = "Seed for distributed runs: each participant renders with its own seed derived from this one."
    RETURN_TYPES = ("INT",)
    RETURN_NAMES = ("seed",)
    FUNCTION = "seed"
    CATEGORY = "distributed"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"seed": ("INT", {"default": 0, "min": 0, "max": SEED_SPACE - 1, "control_after_generate": True})}}

    def seed(self, seed: int) -> tuple[int]:
        return (seed,)


class DistributedCollector:
    """Joins the master's images with every worker's into one batch, in a fixed order.

    `images` is lazy: the collector starts the workers before the master renders its own share, and
    the master skips its share entirely when it only orchestrates.
    """

    TITLE = "Distributed Collector"
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

    def check_lazy_status(self, images=None, unique_id=None, prompt=None, **settings: Any) -> list[str]:
        return _lazy_inputs("images", self.TITLE, unique_id, prompt)

    def collect(self, images=None, unique_id=None, prompt=None, **settings: Any) -> Any:
        job_id = _job_id(prompt, unique_id)
        if job_id is None:
            return (images,)
        master_shapes = {str(unique_id): tuple(images.shape[1:])} if images is not None else {}
        job = _wait_for_shares(job_id, str(unique_id), master_shapes, self.TITLE)
        return _expand_master_shares(job, str(unique_id), images) or (_join_images(job, str(unique_id), images),)


class DistributedAudioCollector:
    """Joins the master's audio with every worker's into one AUDIO batch, in a fixed order.

    Audio comes back only from workers that run this extension too (its result sink carries the
    waveform); a stock worker is skipped for audio shares, with the reason in the job's attempts.
    """

    TITLE = "Distributed Audio Collector"
    DESCRIPTION = (
        "Runs the graph above it on every enabled worker that has ComfyUI Distributed GPU too and collects all audio "
        "into one batch: the master's first, then each share in order; shorter clips are padded with silence."
    )
    RETURN_TYPES = ("AUDIO",)
    FUNCTION = "collect"
    CATEGORY = "distributed"

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {
            "required": {"audio": ("AUDIO", {"lazy": True})},
            "optional": {
                SHARES_INPUT: SHARES_OPTION,
            },
            "hidden": {"unique_id": "UNIQUE_ID", "prompt": "PROMPT"},
        }

    def check_lazy_status(self, audio=None, unique_id=None, prompt=None, **settings: Any) -> list[str]:
        return _lazy_inputs("audio", self.TITLE, unique_id, prompt)

    def collect(self, audio=None, unique_id=None, prompt=None, **settings: Any) -> Any:
        job_id = _job_id(prompt, unique_id)
        if job_id is None:
            return (audio,)
        job = _wait_for_shares(job_id, str(unique_id), {}, self.TITLE)
        return _expand_master_shares(job, str(unique_id), audio) or (_join_audio(job, str(unique_id), audio),)


class DistributedMasterShare:
    """Renders on the master a share no worker could deliver; added by a collector's expansion.

    Each hands its share's output to the job; the last of the chain (`last`) then joins the whole
    batch, which becomes the collector's output.
    """

    KIND = "images"
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
            },
            "optional": {"after": (data_type,)},
        }

    def deliver(self, job_id: str, collector_id: str, share_index: int, last: bool, after: Any = None, **output: Any) -> tuple[Any]:
        produced = output[self.KIND]
        result = (collect.AudioClip(_waveform(produced), int(produced["sample_rate"])) if self.KIND == "audio"
                  else produced.detach().float().cpu().numpy())
        try:
            _app.deliver_master_share(job_id, share_index, collector_id, result)
            job = _app.dispatcher.job(job_id)
            if job is None:
                raise DistributedError(f"distributed job {job_id} is gone")
        except DistributedError as error:
            raise RuntimeError(f"Distributed Collector: {error}") from None
        if not last:
            return (produced,)
        master_part = job.master_parts.pop(collector_id, None)
        join = _join_audio if self.KIND == "audio" else _join_images
        return (join(job, collector_id, master_part),)


class DistributedMasterAudioShare(DistributedMasterShare):
    """The audio collector's DistributedMasterShare."""

    KIND = "audio"
    DESCRIPTION = "Added by a Distributed Audio Collector for a share the master renders itself; not for use in workflows."
    RETURN_TYPES = ("AUDIO",)


def _lazy_inputs(input_name: str, title: str, unique_id: str | None, prompt: dict[str, Any] | None) -> list[str]:
    """Starts the job's remote shares before the master renders its own; the input is needed only
    when the master takes part."""
    job_id = _job_id(prompt, unique_id)
    if job_id is None:
        return [input_name]
    try:
        master_renders = _app.start_job(job_id, _interrupted)
    except Interrupted:
        raise comfy.model_management.InterruptProcessingException() from None
    except DistributedError as error:
        raise RuntimeError(f"{title}: {error}") from None
    return [input_name] if master_renders else []


def _wait_for_shares(job_id: str, collector_id: str, master_shapes: dict[str, tuple[int, ...]], title: str) -> Job:
    """Waits for every remote share of the job, showing progress on the collector node."""
    progress = comfy.utils.ProgressBar(1, node_id=collector_id)

    def report() -> None:
        job = _app.dispatcher.job(job_id)
        if job is not None and job.queue.shares:
            done = sum(1 for s in job.queue.shares.values() if s.state.value == "done")
            progress.update_absolute(done, len(job.queue.shares))

    try:
        return _app.wait_job(job_id, _interrupted, report, master_shapes)
    except Interrupted:
        raise comfy.model_management.InterruptProcessingException() from None
    except DistributedError as error:
        raise RuntimeError(f"{title}: {error}") from None


def _expand_master_shares(job: Job, collector_id: str, master_part: Any) -> dict[str, Any] | None:
    """The expansion rendering the shares left to the master for this collector, or None if there are none."""
    missing = [index for index in job.master_fallback if collector_id not in job.results.get(index, {})]
    if not missing:
        return None
    assert job.plan is not None
    job.master_parts[collector_id] = master_part
    shares = [(index, job.queue.shares[index].batch) for index in missing]
    expansion, last = fallback_graph(job.plan, job.job_id, collector_id, shares)
    return {"result": ([last, 0],), "expand": expansion}


def _remote_parts(job: Job, collector_id: str) -> list[tuple[str, Any]]:
    """This collector's (label, result) per remote share, in share order."""
    participants = {index: share.participant for index, share in job.queue.shares.items()}
    return collect.ordered_parts(collector_id, job.remote_share_order(), job.results, participants)


def _join_images(job: Job, collector_id: str, images: torch.Tensor | None) -> torch.Tensor:
    """The master's images, then every share's, as one batch; the job then lets go of them."""
    try:
        parts = _remote_parts(job, collector_id)
        labelled = ([("share 0 (master)", images)] if job.master_renders and images is not None else []) + [
            (label, torch.from_numpy(batch)) for label, batch in parts
        ]
        if not labelled:
            raise DistributedError("no participant produced images")
        collect.check_same_size([(label, tuple(batch.shape)) for label, batch in labelled])
    except DistributedError as error:
        raise RuntimeError(f"Distributed Collector: {error}") from None
    reference = labelled[0][1]
    batch = torch.cat([part.to(device=reference.device, dtype=reference.dtype) for _, part in labelled], dim=0)
    _app.release_job(job.job_id, collector_id)
    return batch


def _join_audio(job: Job, collector_id: str, audio: dict[str, Any] | None) -> dict[str, Any]:
    """The master's clip, then every share's, as one AUDIO batch; the job then lets go of them."""
    try:
        clips = _remote_parts(job, collector_id)
        if job.master_renders and audio is not None:
            clips.insert(0, ("share 0 (master)", collect.AudioClip(_waveform(audio), int(audio["sample_rate"]))))
        joined = collect.join_audio(clips)
    except DistributedError as error:
        raise RuntimeError(f"Distributed Audio Collector: {error}") from None
    _app.release_job(job.job_id, collector_id)
    return {"waveform": torch.from_numpy(joined.waveform), "sample_rate": joined.sample_rate}


def _waveform(audio: dict[str, Any]) -> Any:
    return audio["waveform"].detach().float().cpu().numpy()


class DistributedQueuedPrompt:
    """Stands on the master for a prompt of the distributed queue, run whole where a GPU was free.

    Queued by the master in place of the user's prompt (never added by hand). When the master's own
    turn comes and no worker has taken the prompt, it runs the original graph right here; otherwise
    it waits for the worker and saves the images as the prompt's own output nodes would.
    """

    OUTPUT_NODE = True
    RETURN_TYPES = ()
    FUNCTION = "run"
    CATEGORY = "distributed"
    DESCRIPTION = "Added by the distributed queue for a prompt run on another GPU; not for use in workflows."

    @classmethod
    def INPUT_TYPES(cls) -> dict[str, Any]:
        return {"required": {"run_id": ("STRING", {"default": ""})}}

    def run(self, run_id: str) -> dict[str, Any]:
        if _app is None:
            raise RuntimeError("Distributed queue: this ComfyUI is not a distributed master")
        try:
            while True:
                graph = _app.claim_queued_for_master(run_id, _interrupted)
                if graph is not None:
                    return {"result": (), "expand": graph}
                run = _app.wait_queued(run_id, _interrupted)
                if run is not None:
                    break
        except Interrupted:
            raise comfy.model_management.InterruptProcessingException() from None
        except DistributedError as error:
            raise RuntimeError(f"Distributed queue: {error}") from None
        comfy_nodes = importlib.import_module("nodes")  # ComfyUI's own nodes module, not this file
        images = []
        for node_id in run.outputs:
            node = run.prompt[node_id]
            batch = torch.from_numpy(run.images[node_id])
            if node["class_type"] == "SaveImage":
                prefix = node["inputs"].get("filename_prefix", "ComfyUI")
                saved = comfy_nodes.SaveImage().save_images(batch, prefix, prompt=run.prompt)
            else:
                saved = comfy_nodes.PreviewImage().save_images(batch, prompt=run.prompt)
            images += saved["ui"]["images"]
        _app.release_queued(run_id)
        return {"ui": {"images": images, "distributed_worker": [run.participant_name]}}


NODE_CLASS_MAPPINGS = {
    "DistributedSeed": DistributedSeed,
    "DistributedCollector": DistributedCollector,
    "DistributedAudioCollector": DistributedAudioCollector,
    "DistributedMasterShare": DistributedMasterShare,
    "DistributedMasterAudioShare": DistributedMasterAudioShare,
    "DistributedQueuedPrompt": DistributedQueuedPrompt,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "DistributedSeed": "Distributed Seed",
    "DistributedCollector": "Distributed Collector",
    "DistributedAudioCollector": "Distributed Audio Collector",
    "DistributedMasterShare": "Distributed Master Share",
    "DistributedMasterAudioShare": "Distributed Master Audio Share",
    "DistributedQueuedPrompt": "Distributed Queued Prompt",
}
