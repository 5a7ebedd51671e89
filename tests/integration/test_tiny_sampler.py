"""The tiny checkpoint runs stock ComfyUI's real KSampler on CPU: the base the scheduling tests build on."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from PIL import Image, ImageChops

from tests.fixtures.tiny_sd import LATENT_NODE, OUTPUT_NODE, SAMPLER_NODE, tiny_txt2img_prompt, write_tiny_checkpoint
from tests.harness import ComfyInstance

PROGRESS_DEADLINE = 60
"""Seconds a prompt may take before `progress_events` gives up on it."""


@pytest.fixture(scope="module")
def comfy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ComfyInstance, str]]:
    base_dir = tmp_path_factory.mktemp("tiny-sampler")
    ckpt_name = write_tiny_checkpoint(base_dir / "models")
    # One torch thread: on a shared 2-core machine, OpenMP threads fighting other processes made
    # sampling 4x slower (median 1.8 s against 0.46 s per image at load average 7).
    instance = ComfyInstance("tiny-sampler", base_dir, with_extension=False, with_node_pack=False, env={"OMP_NUM_THREADS": "1"})
    try:
        instance.start().wait_ready()
        yield instance, ckpt_name
    finally:
        instance.stop()


def run(instance: ComfyInstance, prompt: dict[str, Any]) -> dict[str, Any]:
    entry = instance.wait_history(instance.queue_prompt(prompt))
    assert entry["status"]["status_str"] == "success", f"{entry['status']}\n{instance.log_tail()}"
    return entry


def images(instance: ComfyInstance, entry: dict[str, Any]) -> list[Image.Image]:
    saved = entry["outputs"][OUTPUT_NODE]["images"]
    return [Image.open(Path(instance.output_dir, item["subfolder"], item["filename"])).convert("RGB") for item in saved]


def cached_nodes(entry: dict[str, Any]) -> list[str]:
    return [node for kind, data in entry["status"]["messages"] if kind == "execution_cached" for node in data["nodes"]]


def max_pixel_difference(a: Image.Image, b: Image.Image) -> int:
    return max(high for _, high in ImageChops.difference(a, b).getextrema())


def test_a_tiny_prompt_saves_one_image_per_batch_item(comfy: tuple[ComfyInstance, str]) -> None:
    instance, ckpt_name = comfy
    entry = run(instance, tiny_txt2img_prompt(ckpt_name, seed=11, batch_size=2))
    saved = images(instance, entry)
    assert [image.size for image in saved] == [(64, 64), (64, 64)]


def test_the_same_seed_gives_the_same_pixels_and_another_seed_does_not(comfy: tuple[ComfyInstance, str]) -> None:
    instance, ckpt_name = comfy
    first = images(instance, run(instance, tiny_txt2img_prompt(ckpt_name, seed=21)))[0]
    other = images(instance, run(instance, tiny_txt2img_prompt(ckpt_name, seed=22)))[0]
    again_entry = run(instance, tiny_txt2img_prompt(ckpt_name, seed=21))
    assert SAMPLER_NODE not in cached_nodes(again_entry), "the rerun must sample again, not reuse a cached result"
    again = images(instance, again_entry)[0]
    assert first.tobytes() == again.tobytes()
    assert first.tobytes() != other.tobytes()


def test_a_slice_of_a_batch_samples_the_same_images_as_the_whole_batch(comfy: tuple[ComfyInstance, str]) -> None:
    """What split-batch distribution relies on: LatentFromBatch sets the latent's batch_index, so
    images 2 and 3 sampled on their own get the noise they get inside the batch of 4."""
    instance, ckpt_name = comfy
    whole = images(instance, run(instance, tiny_txt2img_prompt(ckpt_name, seed=31, batch_size=4)))
    sliced_prompt = tiny_txt2img_prompt(ckpt_name, seed=31, batch_size=4)
    sliced_prompt["slice"] = {"class_type": "LatentFromBatch", "inputs": {"samples": [LATENT_NODE, 0], "batch_index": 2, "length": 2}}
    sliced_prompt[SAMPLER_NODE]["inputs"]["latent_image"] = ["slice", 0]
    sliced = images(instance, run(instance, sliced_prompt))
    assert len(whole) == 4 and len(sliced) == 2
    # A batch of 2 and a batch of 4 may round differently in the convolutions (seen: 0 or 1 level);
    # a different image would differ by far more than 8 levels somewhere.
    differences = [max_pixel_difference(a, b) for a, b in zip(whole[2:], sliced, strict=True)]
    assert max(differences) <= 8, differences
    assert whole[2].tobytes() != whole[3].tobytes()


async def test_the_sampler_reports_one_progress_event_per_step_over_the_websocket(comfy: tuple[ComfyInstance, str]) -> None:
    instance, ckpt_name = comfy
    events = await progress_events(instance, tiny_txt2img_prompt(ckpt_name, seed=41, steps=5))
    sampler_steps = [(event["value"], event["max"]) for event in events if event.get("node") == SAMPLER_NODE]
    assert sampler_steps == [(1, 5), (2, 5), (3, 5), (4, 5), (5, 5)]


async def progress_events(instance: ComfyInstance, prompt: dict[str, Any]) -> list[dict[str, Any]]:
    """Opens the websocket before queueing (with the same client id, as the frontend does), then
    keeps this prompt's `progress` events until it finishes (within PROGRESS_DEADLINE seconds)."""
    client_id = uuid.uuid4().hex
    async with aiohttp.ClientSession() as session, session.ws_connect(f"{instance.url}/ws?clientId={client_id}") as ws:
        prompt_id = await asyncio.to_thread(instance.queue_prompt, prompt, client_id=client_id)
        async with asyncio.timeout(PROGRESS_DEADLINE):
            return await collect_progress(ws, prompt_id)


async def collect_progress(ws: aiohttp.ClientWebSocketResponse, prompt_id: str) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    async for message in ws:
        if message.type != aiohttp.WSMsgType.TEXT:
            continue
        event = json.loads(message.data)
        data = event.get("data") or {}
        if data.get("prompt_id") != prompt_id:
            continue
        if event["type"] == "progress":
            events.append(data)
        elif event["type"] in ("execution_success", "execution_error", "execution_interrupted"):
            assert event["type"] == "execution_success", event
            return events
    raise AssertionError(f"the websocket closed before prompt {prompt_id} finished")
