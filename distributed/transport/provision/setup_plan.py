"""What a set-up script does for one workflow: the facts, before they are written as bash or PowerShell.

- Models: every entry of the workflow's model metadata (`workflow.model_sources`); for one worker,
  only those it lacks. A model file the prompt names without an entry (so without a URL) is listed
  as unresolved.
- Node packs: the custom node packs that provide the prompt's node classes (for one worker: the
  classes it lacks), with the master's remote and commit (`node_packs`).
- Unresolved: a line for everything that could not be turned into a command, kept as comments.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ...graph import Prompt, is_link
from ..preflight import MODEL_EXTENSIONS
from .inventory import WorkerNeeds
from .node_packs import NodePack
from .paths import posix_name
from .workflow import ModelSource


@dataclass(frozen=True)
class SetupPlan:
    """Everything a set-up script says, in the order it says it."""

    title: str
    models: list[ModelSource] = field(default_factory=list)
    packs: list[NodePack] = field(default_factory=list)
    unresolved: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, object]:
        return {
            "title": self.title,
            "models": [{"folder": m.directory, "name": m.name, "url": m.url, "sha256": m.sha256} for m in self.models],
            "node_packs": [pack.as_json() for pack in self.packs],
            "unresolved": self.unresolved,
        }


def needed_classes(prompt: Prompt, needs: WorkerNeeds | None) -> list[str]:
    """The node classes to provide: those one worker lacks, or every class of the prompt."""
    if needs is not None:
        return list(needs.missing_nodes)
    return sorted({str(node.get("class_type")) for node in prompt.values() if isinstance(node, dict)})


def plan_setup(title: str, prompt: Prompt, sources: list[ModelSource], source_problems: list[str], packs: list[NodePack],
               class_problems: list[str], needs: WorkerNeeds | None, known_files: set[str]) -> SetupPlan:
    """The plan for a worker that lacks what `needs` says, or (needs None) for any worker.

    `known_files` are the model file names the master has: a prompt value among them is a model file
    even when its name does not look like one.
    """
    unresolved = list(source_problems)
    by_name = {source.name: source for source in sources}
    if needs is not None:
        models = []
        for missing in needs.missing_models:
            source = by_name.get(missing.name)
            if source is None:
                unresolved.append(f"model {missing.name} ({missing.class_type}.{missing.input_name}, node {missing.node_id}): "
                                  "the workflow's model metadata gives no URL for it")
            elif source not in models:
                models.append(source)
        unresolved += [f"{value}: not offered by the worker and not a model file" for value in needs.other]
    else:
        models = list(sources)
        for node_id, class_type, input_name, name in prompt_files(prompt, known_files):
            if name not in by_name:
                unresolved.append(f"model {name} ({class_type}.{input_name}, node {node_id}): "
                                  "the workflow's model metadata gives no URL for it")
    for pack in packs:
        if pack.problem is not None:
            unresolved.append(f"node pack {pack.folder} ({', '.join(pack.classes)}): {pack.problem}")
    unresolved += class_problems
    return SetupPlan(title, models, [pack for pack in packs if pack.problem is None], unresolved)



def prompt_files(prompt: Prompt, known_files: set[str]) -> list[tuple[str, str, str, str]]:
    """(node id, class, input, file name) of every literal input that names a model file: one the
    master has, or a value with a model file's extension."""
    found = []
    for node_id, node in prompt.items():
        inputs = node.get("inputs") if isinstance(node, dict) else None
        for input_name, value in (inputs or {}).items():
            if not isinstance(value, str) or is_link(value):
                continue
            name = posix_name(value)
            if name in known_files or name.lower().endswith(MODEL_EXTENSIONS):
                found.append((str(node_id), str(node.get("class_type")), input_name, name))
    return found
