"""Before a share is sent: does this worker have every node class and file the prompt names?

Sending a prompt to a worker that lacks a checkpoint only to read ComfyUI's "value not in list" back
would work, but a preflight names every missing file at once, in words a user acts on ("lacks model
file(s): sdxl.safetensors"), and spares the worker the whole prompt. What the worker has comes from
its own `/object_info`: a choice input (a list of values) lists the files of its model folder, so no
folder names are hard-coded and custom loaders are covered too.

File names differ in one way between machines: the path separator of a file in a subfolder
("sdxl/base.safetensors" on Linux, "sdxl\\base.safetensors" on Windows). A value the worker lacks
but has with the other separator is rewritten to the worker's spelling.

Standard library only; `share_runner` fetches and caches the object info.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

from ..graph import Prompt, is_link

UPLOAD_FLAGS = ("image_upload", "video_upload", "audio_upload")
"""Option flags of an input that names a file in the input folder (uploaded by `media`, not checked here)."""
MODEL_EXTENSIONS = (".safetensors", ".ckpt", ".pt", ".pth", ".bin", ".sft", ".gguf", ".onnx", ".pkl", ".yaml")


@dataclass(frozen=True)
class Missing:
    """One value a worker does not offer for a choice input."""

    node_id: str
    class_type: str
    input_name: str
    value: str

    @property
    def is_file(self) -> bool:
        return looks_like_file(self.value)


def looks_like_file(value: str) -> bool:
    """Whether a choice value names a file (a model), not a mode such as a sampler name."""
    return value.lower().endswith(MODEL_EXTENSIONS) or "/" in value or "\\" in value


@dataclass
class Review:
    """The prompt as the worker should get it, and what the worker lacks to run it."""

    prompt: Prompt
    missing_classes: list[str] = field(default_factory=list)
    missing_values: list[Missing] = field(default_factory=list)

    def problem(self) -> str | None:
        """One line naming everything missing, or None when the worker can run the prompt."""
        parts = []
        if self.missing_classes:
            parts.append(f"lacks node class(es) {', '.join(self.missing_classes)} (install the custom nodes on the worker)")
        files = [m for m in self.missing_values if m.is_file]
        if files:
            parts.append("lacks model file(s): " + ", ".join(f"{m.value} ({m.class_type}.{m.input_name}, node {m.node_id})" for m in files))
        others = [m for m in self.missing_values if not m.is_file]
        if others:
            parts.append("does not offer " + ", ".join(f"{m.input_name}={m.value!r} ({m.class_type}, node {m.node_id})" for m in others))
        return "; ".join(parts) or None


def input_spec(object_info: dict[str, Any], class_type: str, input_name: str) -> tuple[Any, dict[str, Any]] | None:
    """(type or choice list, options) of one input in a worker's object info, or None if unknown."""
    inputs = (object_info.get(class_type) or {}).get("input") or {}
    for section in ("required", "optional"):
        spec = (inputs.get(section) or {}).get(input_name)
        if isinstance(spec, list) and spec:
            options = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
            return spec[0], options
    return None


def choices(spec: tuple[Any, dict[str, Any]] | None) -> list[str] | None:
    """The values a choice input accepts (both the old list form and the newer "COMBO" form)."""
    if spec is None:
        return None
    kind, options = spec
    if isinstance(kind, list):
        return [str(value) for value in kind]
    if kind == "COMBO" and isinstance(options.get("options"), list):
        return [str(value) for value in options["options"]]
    return None


def is_upload_input(spec: tuple[Any, dict[str, Any]] | None) -> bool:
    return spec is not None and any(spec[1].get(flag) for flag in UPLOAD_FLAGS)


def review(prompt: Prompt, object_info: dict[str, Any]) -> Review:
    """Checks a share's prompt against a worker's object info; returns a copy in the worker's spelling."""
    result = Review(copy.deepcopy(prompt))
    for node_id, node in result.prompt.items():
        class_type = node.get("class_type")
        if class_type not in object_info:
            if class_type not in result.missing_classes:
                result.missing_classes.append(str(class_type))
            continue
        inputs = node.get("inputs") or {}
        for name, value in inputs.items():
            if not isinstance(value, str) or is_link(value):
                continue
            spec = input_spec(object_info, class_type, name)
            allowed = choices(spec)
            if allowed is None or is_upload_input(spec) or value in allowed:
                continue
            respelled = _other_separator(value)
            if respelled in allowed:
                inputs[name] = respelled
                continue
            result.missing_values.append(Missing(node_id, class_type, name, value))
    return result


def _other_separator(value: str) -> str:
    return value.replace("/", "\\") if "/" in value else value.replace("\\", "/")
