"""The package's imports point one way: api -> jobs -> transport -> workers -> config, with the shared
bottom (errors, events, graph, shares) under them all, and ComfyUI touched only in comfy/.

Above them sit comfy/ (ComfyUI's side: nodes, bridge, server adapter), then app.py (the composition
root), then comfy/startup.py: the entry point that ComfyUI's import of the package runs.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "distributed"
RANKS = {"bottom": 0, "config": 1, "workers": 2, "transport": 3, "jobs": 4, "api": 5, "comfy": 6, "app": 7, "entry": 8}
ENTRY = "distributed.comfy.startup"
BOTTOM = {"errors", "events", "graph", "shares"}
COMFYUI_MODULES = {"comfy", "comfy_execution", "folder_paths", "server", "nodes", "torch", "latent_preview"}


def layer(module: str) -> str:
    """The layer of a module path inside the package, e.g. 'distributed.jobs.dispatch' -> 'jobs'."""
    if module == ENTRY:
        return "entry"
    parts = module.split(".")[1:]
    if not parts or parts[0] in BOTTOM:
        return "bottom"
    return parts[0]


def imports(path: Path) -> list[tuple[str, int]]:
    """(absolute module imported, line) for every import of one module file."""
    module = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    package = module.rsplit(".", 1)[0] if path.name != "__init__.py" else module
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join([*base, *(node.module.split(".") if node.module else [])])
                found += [(f"{target}.{alias.name}" if node.module is None else target, node.lineno) for alias in node.names]
            else:
                found.append((node.module or "", node.lineno))
    return found


def modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def test_no_module_imports_a_higher_layer() -> None:
    wrong = []
    for path in modules():
        importer = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        for imported, line in imports(path):
            if not imported.startswith("distributed.") or layer(imported) == layer(importer):
                continue
            if RANKS[layer(imported)] > RANKS[layer(importer)]:
                wrong.append(f"{path.relative_to(PACKAGE.parent)}:{line} ({layer(importer)}) imports {imported} ({layer(imported)})")
    assert wrong == []


def test_only_comfy_touches_comfyui_and_torch() -> None:
    wrong = []
    for path in modules():
        if layer(".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)) in ("comfy", "entry"):
            continue
        for imported, line in imports(path):
            if imported.split(".")[0] in COMFYUI_MODULES:
                wrong.append(f"{path.relative_to(PACKAGE.parent)}:{line} imports {imported}")
    assert wrong == []


def test_the_layer_check_sees_a_wrong_import() -> None:
    """The walk resolves relative imports: a transport module importing jobs would be caught."""
    sample = PACKAGE / "transport" / "runner.py"
    resolved = {imported for imported, _ in imports(sample)}
    assert "distributed.workers.client" in resolved and "distributed.shares" in resolved
    assert RANKS[layer("distributed.jobs.dispatch")] > RANKS[layer("distributed.transport.runner")]
