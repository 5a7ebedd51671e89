"""Writes example_workflows/*.json, the workflows ComfyUI lists under this pack in its Templates browser.

The files are in the format the frontend saves (nodes, links, widgets_values), so ComfyUI loads them
as if a user had saved them. Edit the workflows here and run

    python scripts/example_workflows.py

to rewrite the files; tests/unit/test_example_workflow_files.py fails when they and this script differ.
The file name is the title the Templates browser shows (both the pinned and the newest frontend show
a custom node pack's template by its file name), and a `.jpg` of the same name is its thumbnail.
"""

from __future__ import annotations

import json
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

EXAMPLES_DIR = Path(__file__).resolve().parent.parent / "example_workflows"

# Each node type's sockets and widgets, in the order ComfyUI's /object_info gives them
# (input_order); widgets_values follow that order, with "control_after_generate" after a seed.
# A socket is (name, type); a widget is (name, type, None).
NODE_TYPES: dict[str, dict[str, Any]] = {
    "DistributedSeed": {"inputs": [("seed", "INT", None)], "outputs": [("seed", "INT")]},
    "DistributedCollector": {
        "inputs": [("images", "IMAGE"), ("shares", "INT", None), ("split_batch", "BOOLEAN", None), ("precision", "COMBO", None)],
        "outputs": [("IMAGE", "IMAGE")],
    },
    "DistributedAudioCollector": {"inputs": [("audio", "AUDIO"), ("shares", "INT", None)], "outputs": [("AUDIO", "AUDIO")]},
    "EmptyImage": {
        "inputs": [("width", "INT", None), ("height", "INT", None), ("batch_size", "INT", None), ("color", "INT", None)],
        "outputs": [("IMAGE", "IMAGE")],
    },
    "ImageAddNoise": {"inputs": [("image", "IMAGE"), ("seed", "INT", None), ("strength", "FLOAT", None)], "outputs": [("IMAGE", "IMAGE")]},
    "ImageScale": {
        "inputs": [("image", "IMAGE"), ("upscale_method", "COMBO", None), ("width", "INT", None), ("height", "INT", None),
                   ("crop", "COMBO", None)],
        "outputs": [("IMAGE", "IMAGE")],
    },
    "ImageBlur": {"inputs": [("image", "IMAGE"), ("blur_radius", "INT", None), ("sigma", "FLOAT", None)], "outputs": [("IMAGE", "IMAGE")]},
    "SaveImage": {"inputs": [("images", "IMAGE"), ("filename_prefix", "STRING", None)], "outputs": []},
    "DistributedSaveImage": {"inputs": [("images", "IMAGE"), ("filename_prefix", "STRING", None)], "outputs": []},
    "CheckpointLoaderSimple": {"inputs": [("ckpt_name", "COMBO", None)], "outputs": [("MODEL", "MODEL"), ("CLIP", "CLIP"), ("VAE", "VAE")]},
    "CLIPLoader": {
        "inputs": [("clip_name", "COMBO", None), ("type", "COMBO", None), ("device", "COMBO", None)],
        "outputs": [("CLIP", "CLIP")],
    },
    "CLIPTextEncode": {"inputs": [("clip", "CLIP"), ("text", "STRING", None)], "outputs": [("CONDITIONING", "CONDITIONING")]},
    "EmptyLatentImage": {
        "inputs": [("width", "INT", None), ("height", "INT", None), ("batch_size", "INT", None)],
        "outputs": [("LATENT", "LATENT")],
    },
    "EmptyLatentAudio": {"inputs": [("seconds", "FLOAT", None), ("batch_size", "INT", None)], "outputs": [("LATENT", "LATENT")]},
    "KSampler": {
        "inputs": [("model", "MODEL"), ("positive", "CONDITIONING"), ("negative", "CONDITIONING"), ("latent_image", "LATENT"),
                   ("seed", "INT", None), ("steps", "INT", None), ("cfg", "FLOAT", None), ("sampler_name", "COMBO", None),
                   ("scheduler", "COMBO", None), ("denoise", "FLOAT", None)],
        "outputs": [("LATENT", "LATENT")],
    },
    "VAEDecode": {"inputs": [("samples", "LATENT"), ("vae", "VAE")], "outputs": [("IMAGE", "IMAGE")]},
    "VAEDecodeAudio": {"inputs": [("samples", "LATENT"), ("vae", "VAE")], "outputs": [("AUDIO", "AUDIO")]},
    "SaveAudio": {"inputs": [("audio", "AUDIO"), ("filename_prefix", "STRING", None)], "outputs": []},
    "MarkdownNote": {"inputs": [], "outputs": []},
    "LoadImage": {"inputs": [("image", "COMBO", None), ("upload", "IMAGEUPLOAD", None)], "outputs": [("IMAGE", "IMAGE"), ("MASK", "MASK")]},
    "DistributedUpscale": {
        "inputs": [("image", "IMAGE"), ("model", "MODEL"), ("positive", "CONDITIONING"), ("negative", "CONDITIONING"), ("vae", "VAE"),
                   ("seed", "INT", None), ("steps", "INT", None), ("cfg", "FLOAT", None), ("sampler_name", "COMBO", None),
                   ("scheduler", "COMBO", None), ("denoise", "FLOAT", None), ("upscale_by", "FLOAT", None),
                   ("tile_width", "INT", None), ("tile_height", "INT", None), ("tile_padding", "INT", None),
                   ("mask_blur", "INT", None), ("upscale_model", "UPSCALE_MODEL"), ("tiled_decode", "BOOLEAN", None)],
        "outputs": [("IMAGE", "IMAGE")],
    },
    "DistributedValue": {
        "inputs": [("values", "STRING", None), ("type", "COMBO", None), ("past_end", "COMBO", None)],
        "outputs": [("value", "*")],
    },
}

SD15 = {
    "name": "v1-5-pruned-emaonly-fp16.safetensors",
    "url": "https://huggingface.co/Comfy-Org/stable-diffusion-v1-5-archive/resolve/main/v1-5-pruned-emaonly-fp16.safetensors?download=true",
    "directory": "checkpoints",
}
SDXL = {
    "name": "sd_xl_base_1.0.safetensors",
    "url": "https://huggingface.co/stabilityai/stable-diffusion-xl-base-1.0/resolve/main/sd_xl_base_1.0.safetensors?download=true",
    "directory": "checkpoints",
}
STABLE_AUDIO = {
    "name": "stable-audio-open-1.0.safetensors",
    "url": "https://huggingface.co/Comfy-Org/stable-audio-open-1.0_repackaged/resolve/main/stable-audio-open-1.0.safetensors?download=true",
    "directory": "checkpoints",
}
T5_BASE = {
    "name": "t5-base.safetensors",
    "url": "https://huggingface.co/ComfyUI-Wiki/t5-base/resolve/main/t5-base.safetensors?download=true",
    "directory": "text_encoders",
}

NOTE_COLOR = {"color": "#432", "bgcolor": "#653"}
POSITIVE_COLOR = {"color": "#232", "bgcolor": "#353"}
NEGATIVE_COLOR = {"color": "#322", "bgcolor": "#533"}
DISTRIBUTED_COLOR = {"color": "#223", "bgcolor": "#335"}


@dataclass
class Node:
    id: int
    type: str
    pos: tuple[float, float]
    size: tuple[float, float]
    widgets: dict[str, Any]
    title: str | None = None
    models: list[dict[str, str]] = field(default_factory=list)
    colors: dict[str, str] = field(default_factory=dict)
    linked: dict[str, int] = field(default_factory=dict)  # input name -> link id
    out_links: dict[int, list[int]] = field(default_factory=dict)  # output slot -> link ids


class Workflow:
    """A graph built node by node; `to_json` gives the frontend's saved-workflow format (version 0.4)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.nodes: list[Node] = []
        self.links: list[list[Any]] = []

    def add(self, node_type: str, pos: tuple[float, float], size: tuple[float, float], **widgets: Any) -> Node:
        spec = NODE_TYPES[node_type]
        known = [entry[0] for entry in spec["inputs"] if len(entry) == 3]
        unknown = set(widgets) - set(known) - {"control_after_generate", "text_value"}
        if unknown:
            raise ValueError(f"{node_type} has no widget {sorted(unknown)}")
        node = Node(len(self.nodes) + 1, node_type, pos, size, widgets)
        self.nodes.append(node)
        return node

    def note(self, pos: tuple[float, float], size: tuple[float, float], title: str, text: str) -> Node:
        node = self.add("MarkdownNote", pos, size)
        node.title = title
        node.colors = NOTE_COLOR
        node.widgets = {"text_value": text}
        return node

    def link(self, source: Node, slot: int, target: Node, input_name: str) -> None:
        link_id = len(self.links) + 1
        link_type = NODE_TYPES[source.type]["outputs"][slot][1]
        if link_type == "*":  # an output of any type: the link takes the type of the input it feeds
            link_type = next(entry[1] for entry in NODE_TYPES[target.type]["inputs"] if entry[0] == input_name)
        target.linked[input_name] = link_id
        source.out_links.setdefault(slot, []).append(link_id)
        self.links.append([link_id, source.id, slot, target.id, input_name, link_type])

    def _inputs(self, node: Node) -> list[dict[str, Any]]:
        """Sockets first, then the widgets fed by a link, as the frontend saves them."""
        spec = NODE_TYPES[node.type]["inputs"]
        sockets = [{"name": entry[0], "type": entry[1], "link": node.linked.get(entry[0])} for entry in spec if len(entry) == 2]
        widget_inputs = [
            {"name": entry[0], "type": entry[1], "widget": {"name": entry[0]}, "link": node.linked[entry[0]]}
            for entry in spec if len(entry) == 3 and entry[0] in node.linked
        ]
        return sockets + widget_inputs

    def _widgets_values(self, node: Node) -> list[Any]:
        if node.type == "MarkdownNote":
            return [node.widgets["text_value"]]
        values: list[Any] = []
        for entry in NODE_TYPES[node.type]["inputs"]:
            if len(entry) != 3:
                continue
            values.append(node.widgets[entry[0]])
            if entry[0] == "seed":
                values.append(node.widgets.get("control_after_generate", "randomize"))
        return values

    def _order(self) -> dict[int, int]:
        """Execution order the frontend stores: sources first, notes ahead of everything."""
        incoming = {node.id: {link[1] for link in self.links if link[3] == node.id} for node in self.nodes}
        order: list[int] = []
        while len(order) < len(self.nodes):
            ready = sorted(n for n, deps in incoming.items() if n not in order and deps <= set(order))
            order.extend(ready)
        return {node_id: index for index, node_id in enumerate(order)}

    def to_json(self) -> dict[str, Any]:
        order = self._order()
        links = [list(link) for link in self.links]
        nodes = []
        for node in self.nodes:
            inputs = self._inputs(node)
            slot_of = {entry["name"]: index for index, entry in enumerate(inputs)}
            for link in links:
                if link[3] == node.id:
                    link[4] = slot_of[link[4]]
            outputs = [
                {"name": name, "type": kind, "slot_index": slot, "links": node.out_links.get(slot, [])}
                for slot, (name, kind) in enumerate(NODE_TYPES[node.type]["outputs"])
            ]
            properties: dict[str, Any] = {"Node name for S&R": node.type}
            if node.models:
                properties["models"] = node.models
            entry: dict[str, Any] = {
                "id": node.id, "type": node.type, "pos": list(node.pos), "size": list(node.size), "flags": {},
                "order": order[node.id], "mode": 0, "inputs": inputs, "outputs": outputs,
            }
            if node.title:
                entry["title"] = node.title
            entry["properties"] = properties if node.type != "MarkdownNote" else {}
            entry["widgets_values"] = self._widgets_values(node)
            entry.update(node.colors)
            nodes.append(entry)
        return {
            "id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"comfyui-distributed-gpu/example/{self.name}")),
            "revision": 0,
            "last_node_id": len(self.nodes),
            "last_link_id": len(self.links),
            "nodes": nodes,
            "links": links,
            "groups": [],
            "config": {},
            "extra": {"ds": {"scale": 0.6, "offset": [110, 480]}},
            "version": 0.4,
        }


# --- the workflows -------------------------------------------------------------------------------

TRY_IT_NOTE = """## Try it without models

Every participant (this ComfyUI and each enabled worker in the **Distributed** tab) renders one
picture from its own seed: the **Distributed Seed** gives the master its value and each worker's share
that value + 1, + 2, ... The pictures are random colour fields built from a few pixels of noise, so you
need no model file, and each takes a few seconds of CPU.

Press **Run**. The **Distributed Collector** hands back one batch: the master's picture first, then
one per share in order. The progress box at the top of the Distributed tab says who renders which
share, and each worker card gets its relative speed once the run is over.

Add a worker first (the + in the Distributed tab), or run `bash scripts/demo.sh`, which starts two local
CPU workers for you."""

TXT2IMG_NOTE = """## Text to image on every GPU

One prompt, one picture per participant: this ComfyUI and every enabled worker in the **Distributed**
tab. The **Distributed Seed** feeds the KSampler: the master renders with the seed as it is, each
worker's share with seed + 1, + 2, ... The **Distributed Collector** returns them as one batch, the
master's first.

Each worker needs the same checkpoint in its own `models/{directory}/` folder: {model}.
Workers are plain ComfyUI; they need no extension for images."""

SHARES_NOTE = """## More shares than GPUs

The collector's **shares** is 8: eight pictures are rendered, each with its own seed, whatever the
number of GPUs. Shares wait on the master and go to whichever GPU is free first, so a fast GPU renders
more of them than a slow one. With **shares** at 0 there is one share per participant.

Each worker needs `{model}` in its `models/checkpoints/` folder."""

SPLIT_NOTE = """## Split one batch across GPUs

**split_batch** is on: the Empty Latent Image's batch of 8 is cut into slices sized by each GPU's
measured speed, and every slice keeps the noise it would have had in one batch on one GPU. The result
is the same 8 pictures one GPU would make, only sooner.

Each worker needs `{model}` in its `models/checkpoints/` folder."""

QUEUE_NOTE = """## The distributed queue

This workflow has no Distributed Collector. Turn on **Distributed queue** in the Distributed tab
(Settings, at the bottom): each prompt you queue then runs whole on the first free GPU, in the order
of the worker list, so pressing Run (or setting the batch count to 8) keeps every GPU busy with
separate prompts.

With the setting off, the prompt runs on this ComfyUI only, as usual. Each worker needs `{model}` in
its `models/checkpoints/` folder."""

AUDIO_NOTE = """## Audio on every GPU (Stable Audio Open)

Every participant renders one clip from its own seed; the **Distributed Audio Collector** returns them
as one batch (shorter clips are padded with silence), the master's first.

Models, on the master and on every worker:

- checkpoints: `stable-audio-open-1.0.safetensors`
- text_encoders: `t5-base.safetensors`

Audio comes back only from workers that have ComfyUI Distributed GPU installed too; stock workers are
skipped for audio shares (the run's details say so). The stock audio nodes need `torchaudio`."""

UPSCALE_NOTE = """## Upscale with every GPU

The **Distributed Upscale** enlarges the picture by **upscale_by**, cuts it into tiles of
**tile_width** x **tile_height** (plus **tile_padding** of context around each) and refines every tile
with the checkpoint at a low **denoise**. The tiles are the shares: each goes to whichever GPU frees up
first, this ComfyUI included, and comes back to be blended in without seams (**mask_blur**). The
picture is the same whatever GPUs took part: each tile's noise comes from the seed and its place.

Load your own picture in **Load Image** (the example is ComfyUI's own `example.png`). A 768 px
picture at 2x with 512 px tiles makes 9 tiles. Wire an upscale model (Load Upscale Model) into
**upscale_model** to enlarge with it before the tiles are refined.

Each worker needs `{model}` in its `models/checkpoints/` folder; workers are plain ComfyUI."""

CFG_NOTE = """## Compare cfg values across GPUs (X/Y)

The **Distributed Value** gives each share one line of its list: share 1 (this ComfyUI's own) gets
`4.0`, share 2 gets `6.0`, and so on. Here it feeds the KSampler's **cfg**; the seed is the
KSampler's own and the same for every share, so the four pictures differ only in cfg. The
collector's **shares** is 4: one picture per value, however many GPUs you have, and the batch comes
back in the list's order. **Save Image (Distributed)** writes into each picture the prompt of the
share that made it: drag picture 3 back into ComfyUI and it renders with cfg 8 again.

Wire it into any input of its **type** instead: a prompt (STRING, into a text input converted to a
socket), a sampler (COMBO), a LoRA strength (FLOAT). Lines past the end of the list start again
(**past_end** `cycle`) or repeat the last one.

Each worker needs `{model}` in its `models/checkpoints/` folder."""


def try_it_without_models() -> Workflow:
    wf = Workflow("Try it without models")
    wf.note((20, -330), (520, 300), "Note: how it works", TRY_IT_NOTE)
    seed = wf.add("DistributedSeed", (20, 260), (270, 82), seed=1234, control_after_generate="randomize")
    seed.colors = DISTRIBUTED_COLOR
    empty = wf.add("EmptyImage", (20, 60), (270, 130), width=6, height=6, batch_size=1, color=0x808080)
    noise = wf.add("ImageAddNoise", (330, 60), (270, 106), seed=0, control_after_generate="fixed", strength=0.6)
    scale = wf.add("ImageScale", (640, 60), (270, 130), upscale_method="nearest-exact", width=768, height=768, crop="disabled")
    blur = wf.add("ImageBlur", (640, 240), (270, 82), blur_radius=31, sigma=10.0)
    collector = wf.add("DistributedCollector", (950, 60), (300, 110), shares=0, split_batch=False, precision="uint8")
    collector.colors = DISTRIBUTED_COLOR
    save = wf.add("SaveImage", (1290, 60), (420, 470), filename_prefix="distributed/try-it")
    wf.link(empty, 0, noise, "image")
    wf.link(seed, 0, noise, "seed")
    wf.link(noise, 0, scale, "image")
    wf.link(scale, 0, blur, "image")
    wf.link(blur, 0, collector, "images")
    wf.link(collector, 0, save, "images")
    return wf


def txt2img(name: str, model: dict[str, str], size: int, prompt: str, note: str, *, steps: int, cfg: float,
            batch_size: int = 1, collector: dict[str, Any] | None = None, seed_per_share: bool = True, prefix: str) -> Workflow:
    """Checkpoint → prompts → latent → KSampler → decode → collector → save; the KSampler's seed comes
    from a Distributed Seed when there is a collector and `seed_per_share`, else it is the sampler's own."""
    wf = Workflow(name)
    wf.note((20, -330), (560, 300), "Note: how it works", note.replace("{model}", model["name"]).replace("{directory}", model["directory"]))
    ckpt = wf.add("CheckpointLoaderSimple", (20, 140), (330, 98), ckpt_name=model["name"])
    ckpt.models = [dict(model)]
    positive = wf.add("CLIPTextEncode", (390, 60), (420, 170), text=prompt)
    positive.title = "Positive prompt"
    positive.colors = POSITIVE_COLOR
    negative = wf.add("CLIPTextEncode", (390, 270), (420, 140), text="blurry, low quality, watermark, text")
    negative.title = "Negative prompt"
    negative.colors = NEGATIVE_COLOR
    latent = wf.add("EmptyLatentImage", (390, 450), (420, 106), width=size, height=size, batch_size=batch_size)
    sampler = wf.add("KSampler", (850, 60), (315, 262), seed=0, control_after_generate="fixed", steps=steps, cfg=cfg,
                     sampler_name="euler", scheduler="normal", denoise=1.0)
    decode = wf.add("VAEDecode", (850, 370), (210, 46))
    save_at = (1200, 60)
    wf.link(ckpt, 0, sampler, "model")
    wf.link(ckpt, 1, positive, "clip")
    wf.link(ckpt, 1, negative, "clip")
    wf.link(positive, 0, sampler, "positive")
    wf.link(negative, 0, sampler, "negative")
    wf.link(latent, 0, sampler, "latent_image")
    wf.link(sampler, 0, decode, "samples")
    wf.link(ckpt, 2, decode, "vae")
    last = decode
    if collector is not None and seed_per_share:
        seed = wf.add("DistributedSeed", (20, 300), (330, 82), seed=1234, control_after_generate="randomize")
        seed.colors = DISTRIBUTED_COLOR
        wf.link(seed, 0, sampler, "seed")
    else:
        sampler.widgets["control_after_generate"] = "randomize" if collector is None else "fixed"
        sampler.widgets["seed"] = 1234
    if collector is not None:
        gather = wf.add("DistributedCollector", (1200, 60), (300, 110),
                        **{"shares": 0, "split_batch": False, "precision": "uint8", **collector})
        gather.colors = DISTRIBUTED_COLOR
        wf.link(decode, 0, gather, "images")
        last = gather
        save_at = (1540, 60)
    save = wf.add("SaveImage", save_at, (420, 470), filename_prefix=prefix)
    wf.link(last, 0, save, "images")
    return wf


def audio() -> Workflow:
    wf = Workflow("Audio on every GPU (Stable Audio)")
    wf.note((20, -330), (560, 300), "Note: how it works", AUDIO_NOTE)
    ckpt = wf.add("CheckpointLoaderSimple", (20, 60), (330, 98), ckpt_name=STABLE_AUDIO["name"])
    ckpt.models = [dict(STABLE_AUDIO)]
    clip = wf.add("CLIPLoader", (20, 200), (330, 106), clip_name=T5_BASE["name"], type="stable_audio", device="default")
    clip.models = [dict(T5_BASE)]
    seed = wf.add("DistributedSeed", (20, 350), (330, 82), seed=1234, control_after_generate="randomize")
    seed.colors = DISTRIBUTED_COLOR
    positive = wf.add("CLIPTextEncode", (390, 60), (420, 150), text="warm lo-fi piano loop, soft vinyl crackle, 90 BPM")
    positive.title = "Positive prompt"
    positive.colors = POSITIVE_COLOR
    negative = wf.add("CLIPTextEncode", (390, 250), (420, 110), text="")
    negative.title = "Negative prompt"
    negative.colors = NEGATIVE_COLOR
    latent = wf.add("EmptyLatentAudio", (390, 400), (420, 82), seconds=10.0, batch_size=1)
    sampler = wf.add("KSampler", (850, 60), (315, 262), seed=0, control_after_generate="fixed", steps=50, cfg=4.98,
                     sampler_name="dpmpp_3m_sde_gpu", scheduler="exponential", denoise=1.0)
    decode = wf.add("VAEDecodeAudio", (850, 370), (210, 46))
    gather = wf.add("DistributedAudioCollector", (1200, 60), (300, 82), shares=0)
    gather.colors = DISTRIBUTED_COLOR
    save = wf.add("SaveAudio", (1540, 60), (380, 140), filename_prefix="audio/distributed")
    wf.link(ckpt, 0, sampler, "model")
    wf.link(clip, 0, positive, "clip")
    wf.link(clip, 0, negative, "clip")
    wf.link(positive, 0, sampler, "positive")
    wf.link(negative, 0, sampler, "negative")
    wf.link(latent, 0, sampler, "latent_image")
    wf.link(seed, 0, sampler, "seed")
    wf.link(sampler, 0, decode, "samples")
    wf.link(ckpt, 2, decode, "vae")
    wf.link(decode, 0, gather, "audio")
    wf.link(gather, 0, save, "audio")
    return wf


LANDSCAPE = "a lighthouse on a rocky coast at dusk, dramatic clouds, oil painting"


def upscale() -> Workflow:
    """Load Image → Distributed Upscale (SD1.5 refines the tiles) → save."""
    wf = Workflow("Upscale with every GPU (SD1.5)")
    wf.note((20, -330), (560, 300), "Note: how it works", UPSCALE_NOTE.replace("{model}", SD15["name"]))
    ckpt = wf.add("CheckpointLoaderSimple", (20, 60), (330, 98), ckpt_name=SD15["name"])
    ckpt.models = [dict(SD15)]
    image = wf.add("LoadImage", (20, 200), (330, 320), image="example.png", upload="image")
    positive = wf.add("CLIPTextEncode", (390, 60), (420, 150), text="highly detailed, sharp focus, fine texture, high quality")
    positive.title = "Positive prompt"
    positive.colors = POSITIVE_COLOR
    negative = wf.add("CLIPTextEncode", (390, 250), (420, 110), text="blurry, noise, artifacts, watermark, text")
    negative.title = "Negative prompt"
    negative.colors = NEGATIVE_COLOR
    tiles = wf.add("DistributedUpscale", (850, 60), (330, 430), seed=1234, control_after_generate="fixed", steps=20, cfg=7.0,
                   sampler_name="euler", scheduler="normal", denoise=0.3, upscale_by=2.0, tile_width=512, tile_height=512,
                   tile_padding=64, mask_blur=16, tiled_decode=False)
    tiles.colors = DISTRIBUTED_COLOR
    save = wf.add("SaveImage", (1220, 60), (520, 560), filename_prefix="distributed/upscale")
    wf.link(image, 0, tiles, "image")
    wf.link(ckpt, 0, tiles, "model")
    wf.link(ckpt, 1, positive, "clip")
    wf.link(ckpt, 1, negative, "clip")
    wf.link(positive, 0, tiles, "positive")
    wf.link(negative, 0, tiles, "negative")
    wf.link(ckpt, 2, tiles, "vae")
    wf.link(tiles, 0, save, "images")
    return wf


def cfg_per_share() -> Workflow:
    """The SD1.5 txt2img with one fixed seed for every share, four shares, and cfg from a Distributed Value."""
    wf = txt2img("Compare cfg values across GPUs (SD1.5)", SD15, 512, LANDSCAPE, CFG_NOTE, steps=20, cfg=7.0,
                 collector={"shares": 4}, seed_per_share=False, prefix="distributed/cfg")
    save = next(node for node in wf.nodes if node.type == "SaveImage")
    save.type = "DistributedSaveImage"  # each picture keeps the prompt, and so the cfg, that made it
    sampler = next(node for node in wf.nodes if node.type == "KSampler")
    value = wf.add("DistributedValue", (20, 430), (330, 200), values="4.0\n6.0\n8.0\n10.0", type="FLOAT", past_end="cycle")
    value.title = "cfg per share"
    value.colors = DISTRIBUTED_COLOR
    wf.link(value, 0, sampler, "cfg")
    return wf


def examples() -> list[Workflow]:
    return [
        try_it_without_models(),
        txt2img("Text to image on every GPU (SD1.5)", SD15, 512, LANDSCAPE, TXT2IMG_NOTE, steps=20, cfg=7.0, collector={},
                prefix="distributed/sd15"),
        txt2img("Text to image on every GPU (SDXL)", SDXL, 1024, LANDSCAPE, TXT2IMG_NOTE, steps=25, cfg=7.0, collector={},
                prefix="distributed/sdxl"),
        txt2img("More shares than GPUs (8 pictures)", SD15, 512, LANDSCAPE, SHARES_NOTE, steps=20, cfg=7.0,
                collector={"shares": 8}, prefix="distributed/shares"),
        txt2img("Split one batch across GPUs", SD15, 512, LANDSCAPE, SPLIT_NOTE, steps=20, cfg=7.0, batch_size=8,
                collector={"split_batch": True}, prefix="distributed/split"),
        txt2img("Distributed queue", SD15, 512, LANDSCAPE, QUEUE_NOTE, steps=20, cfg=7.0, collector=None, prefix="distributed/queue"),
        audio(),
        upscale(),
        cfg_per_share(),
    ]


def render(workflow: Workflow) -> str:
    return json.dumps(workflow.to_json(), indent=2, ensure_ascii=False) + "\n"


def main() -> int:
    EXAMPLES_DIR.mkdir(exist_ok=True)
    wanted = {f"{wf.name}.json": render(wf) for wf in examples()}
    for stale in EXAMPLES_DIR.glob("*.json"):
        if stale.name not in wanted:
            stale.unlink()
    for name, text in wanted.items():
        (EXAMPLES_DIR / name).write_text(text)
        print(EXAMPLES_DIR / name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
