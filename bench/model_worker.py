"""A stand-in worker process for bench/models.py: this extension's model routes over a folder, and
an `/object_info` whose loaders list that folder's files, as a ComfyUI worker would serve them.

The routes are the real ones (`api/model_store.py` over `transport/provision/`); only ComfyUI's
`folder_paths`, which tells them where the folders are, is replaced by a fixed layout.

Run: python bench/model_worker.py ROOT PORT [--stock]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from aiohttp import web

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from distributed.api.access import AccessPolicy
from distributed.api.model_store import add_model_store_routes
from distributed.transport.provision.hashes import HashCache
from distributed.transport.provision.library import ModelLibrary
from distributed.transport.provision.paths import ModelFolder, ModelFolders
from distributed.transport.provision.store import ModelStore

EXTENSIONS = frozenset({".safetensors", ".ckpt", ".pt", ".pth", ".bin", ".sft"})
KINDS = ("checkpoints", "loras", "vae", "controlnet")
LOADERS = {
    "checkpoints": [("CheckpointLoaderSimple", "ckpt_name"), ("CheckpointLoader", "ckpt_name"),
                    ("ImageOnlyCheckpointLoader", "ckpt_name"), ("unCLIPCheckpointLoader", "ckpt_name")],
    "loras": [("LoraLoader", "lora_name"), ("LoraLoaderModelOnly", "lora_name")],
    "vae": [("VAELoader", "vae_name")],
    "controlnet": [("ControlNetLoader", "control_net_name"), ("DiffControlNetLoader", "control_net_name")],
}
FILLER_CLASSES = 600
"""Node classes without file lists, as many as a ComfyUI with a few node packs has."""


def folders(root: Path) -> ModelFolders:
    return ModelFolders([ModelFolder(kind, (root / "models" / kind,), EXTENSIONS) for kind in KINDS])


def object_info(root: Path) -> dict[str, Any]:
    info: dict[str, Any] = {}
    for kind, loaders in LOADERS.items():
        names = sorted(p.relative_to(root / "models" / kind).as_posix() for p in (root / "models" / kind).rglob("*.safetensors"))
        for class_type, input_name in loaders:
            info[class_type] = {"input": {"required": {input_name: [names, {}]}}, "output": ["MODEL"], "name": class_type,
                                "python_module": "nodes", "category": "loaders"}
    for index in range(FILLER_CLASSES):
        info[f"Filler{index}"] = {"input": {"required": {"image": ["IMAGE"], "amount": ["FLOAT", {"default": 1.0, "min": 0, "max": 10}],
                                                         "mode": [["a", "b", "c"], {}]}},
                                  "output": ["IMAGE"], "name": f"Filler{index}", "python_module": "custom_nodes.pack",
                                  "category": "filler", "description": "x" * 200}
    return info


def build(root: Path, stock: bool) -> web.Application:
    app = web.Application()
    routes = web.RouteTableDef()
    info = object_info(root)

    @routes.get("/object_info")
    async def get_object_info(request: web.Request) -> web.Response:
        return web.json_response(info)

    @routes.get("/system_stats")
    async def system_stats(request: web.Request) -> web.Response:
        return web.json_response({"system": {"os": "posix"}, "devices": []})

    if not stock:
        layout = folders(root)
        library = ModelLibrary(lambda: layout, HashCache())
        add_model_store_routes(routes, AccessPolicy(), library, ModelStore(library))
    app.add_routes(routes)
    return app


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("root", type=Path)
    parser.add_argument("port", type=int)
    parser.add_argument("--stock", action="store_true", help="without this extension's routes (a stock worker)")
    args = parser.parse_args()
    web.run_app(build(args.root, args.stock), host="127.0.0.1", port=args.port, print=None)


if __name__ == "__main__":
    main()
