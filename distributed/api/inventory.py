"""Routes about which worker has which model files and nodes, copying models, and set-up scripts.

    GET    /distributed/inventory                        the master's and every worker's model files (?sha256=1: hashes)
    POST   /distributed/inventory                        what each worker lacks for a prompt  {prompt, workflow?}
    POST   /distributed/setup-script                     a script that prepares a worker
                                                         {prompt, workflow?, worker_id?, shell?, format?}
    GET    /distributed/model-copies                     every copy this master ran or runs
    POST   /distributed/workers/{worker_id}/models/copy  copy what a worker lacks (202)
                                                         {prompt, workflow?} or {files}, limit_mb_s?
    DELETE /distributed/workers/{worker_id}/models/copy  stop that copy (what arrived stays for a resume)

`prompt` is the API-format prompt (what the browser queues) and `workflow` the saved workflow, whose
`models` metadata says where files come from. Workers are checked against the prompt they would
get: a prompt with a collector is planned, and the share prompt checked (our own nodes never reach
a worker). Copies run in the background; `distributed.model_copy` events carry their progress.
"""

from __future__ import annotations

from typing import Any, Literal, Protocol

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, model_validator

from ..config.models import WorkerConfig
from ..config.registry import Registry
from ..errors import ConfigError, ModelFileError, NoSpaceForModel, PlanError
from ..graph import Prompt
from ..jobs.plan import has_collector, plan
from ..transport.provision.inventory import Inventory, WorkerNeeds
from ..transport.provision.library import ModelLibrary
from ..transport.provision.node_packs import PackLocator, packs_for
from ..transport.provision.paths import clean_name
from ..transport.provision.script import FILENAMES, render
from ..transport.provision.sender import CopyFile, ModelCopier
from ..transport.provision.setup_plan import needed_classes, plan_setup
from ..transport.provision.store import megabytes
from ..transport.provision.workflow import model_sources
from .access import AccessPolicy
from .bodies import read_body

TRUE_VALUES = ("1", "true", "yes")
MB = 1 << 20


class PromptBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    prompt: dict[str, Any] = Field(description="The API-format prompt, as queued.")
    workflow: dict[str, Any] | None = Field(None, description="The saved workflow; its `models` metadata names download URLs.")


class ScriptBody(PromptBody):
    worker_id: str | None = Field(None, description="Only what this worker lacks; without it, everything the workflow needs.")
    shell: Literal["bash", "powershell"] = "bash"
    format: Literal["json", "text"] = Field("json", description="text: the script alone, as a download.")


class FileRef(BaseModel):
    model_config = ConfigDict(extra="forbid")

    folder: str
    name: str


class CopyBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    prompt: dict[str, Any] | None = None
    workflow: dict[str, Any] | None = None
    files: list[FileRef] | None = Field(None, max_length=1000, description="Copy these master files instead of what a prompt lacks.")
    limit_mb_s: float | None = Field(None, gt=0, le=100_000, description="At most this many MB per second (a shared uplink).")

    @model_validator(mode="after")
    def _one_source(self) -> CopyBody:
        if (self.prompt is None) == (self.files is None):
            raise ValueError("prompt: give either a prompt (copy what it lacks) or files, not both")
        return self


class CopySource(Protocol):
    def copies(self) -> list[Any]: ...


def prompt_for_workers(prompt: dict[str, Any]) -> Prompt:
    """The prompt a worker would get: a share of a prompt with a collector, else the prompt whole."""
    if not prompt or not all(isinstance(node, dict) and isinstance(node.get("class_type"), str) for node in prompt.values()):
        raise ConfigError("prompt: an API-format prompt is required (node id -> {class_type, inputs})", field="prompt")
    if not has_collector(prompt):
        return prompt
    try:
        return plan(prompt).share_prompt(1)
    except PlanError as error:
        raise ConfigError(f"prompt: {error}", field="prompt") from None


def add_inventory_routes(routes: web.RouteTableDef, policy: AccessPolicy, registry: Registry, inventory: Inventory,
                         library: ModelLibrary, packs: PackLocator, copier: ModelCopier) -> None:
    guard, reader = policy.guard, policy.reader

    def workers() -> list[WorkerConfig]:
        return list(registry.snapshot().workers)

    @routes.get("/distributed/inventory")
    @reader
    async def get_inventory(request: web.Request) -> web.Response:
        with_sha256 = request.query.get("sha256", "").lower() in TRUE_VALUES
        return web.json_response(await inventory.snapshot(workers(), with_sha256))

    @routes.post("/distributed/inventory")
    @reader
    async def check_prompt(request: web.Request) -> web.Response:
        body = await read_body(request, PromptBody)
        sources, problems = model_sources(body.workflow)
        rows = await inventory.needs(workers(), prompt_for_workers(body.prompt), sources)
        return web.json_response({"workers": [row.as_json() for row in rows], "workflow_problems": problems})

    @routes.post("/distributed/setup-script")
    @reader
    async def setup_script(request: web.Request) -> web.StreamResponse:
        body = await read_body(request, ScriptBody)
        prompt = prompt_for_workers(body.prompt)
        sources, problems = model_sources(body.workflow)
        needs: WorkerNeeds | None = None
        title = "for the open workflow"
        if body.worker_id:
            worker = registry.worker(body.worker_id)
            needs = await inventory.needs_of(worker, prompt, sources)
            title = f"({worker.name}) for the open workflow"
            if needs.failure is not None:  # a pod not up yet still gets a script: one for everything
                problems = [f"worker {worker.name} could not be asked ({needs.error}); this script covers all the workflow needs",
                            *problems]
                needs = None
        pack_list, class_problems = await packs_for(needed_classes(prompt, needs), packs)
        known = {file.name for file in await library.files()}
        setup = plan_setup(title, prompt, sources, problems, pack_list, class_problems, needs, known)
        script = render(setup, body.shell)
        filename = FILENAMES[body.shell]
        if body.format == "text":
            return web.Response(text=script, content_type="text/plain", charset="utf-8",
                                headers={"Content-Disposition": f'attachment; filename="{filename}"'})
        return web.json_response({"shell": body.shell, "filename": filename, "script": script, **setup.as_json()})

    @routes.get("/distributed/model-copies")
    @reader
    async def list_copies(request: web.Request) -> web.Response:
        return web.json_response({"copies": [copy.snapshot() for copy in copier.copies()]})

    @routes.post("/distributed/workers/{worker_id}/models/copy")
    @guard
    async def start_copy(request: web.Request) -> web.Response:
        worker = registry.worker(request.match_info["worker_id"])
        body = await read_body(request, CopyBody)
        if body.files is not None:
            files, skipped, free = _named_files(library, body.files), [], None
        else:
            sources, _ = model_sources(body.workflow)
            needs = await inventory.needs_of(worker, prompt_for_workers(body.prompt or {}), sources)
            if needs.failure is not None:
                raise needs.failure
            if not needs.extension:
                raise ModelFileError(f"worker '{worker.name}' does not run this extension, so it cannot receive files; "
                                     "use its set-up script instead")
            files, skipped = inventory.copy_files(needs)
            free = needs.free_bytes
        if free:
            _check_room(worker, files, free)
        limit = body.limit_mb_s * MB if body.limit_mb_s else None
        copy = copier.start(worker, files, limit) if files else None
        return web.json_response({"copy": copy.snapshot() if copy else None, "skipped": skipped}, status=202 if copy else 200)

    @routes.delete("/distributed/workers/{worker_id}/models/copy")
    @guard
    async def cancel_copy(request: web.Request) -> web.Response:
        worker = registry.worker(request.match_info["worker_id"])
        copy = await copier.cancel(worker.id)
        return web.json_response({"copy": copy.snapshot() if copy else None})


def _named_files(library: ModelLibrary, refs: list[FileRef]) -> list[CopyFile]:
    files = []
    for index, ref in enumerate(refs):
        name = clean_name(ref.name)
        path = library.find(ref.folder, name)
        if path is None:
            raise ConfigError(f"files.{index}: the master has no {ref.folder} file named {ref.name}", field=f"files.{index}")
        files.append(CopyFile(ref.folder, name, path, path.stat().st_size))
    return files


def _check_room(worker: WorkerConfig, files: list[CopyFile], free: dict[str, int]) -> None:
    """Refuses up front when a folder kind's files outgrow the free space the worker reported for it."""
    needed: dict[str, int] = {}
    for file in files:
        needed[file.kind] = needed.get(file.kind, 0) + file.size
    for kind, size in needed.items():
        if kind in free and size > free[kind]:
            raise NoSpaceForModel(f"worker '{worker.name}' has {megabytes(free[kind])} free for {kind}, "
                                  f"and the missing {kind} files take {megabytes(size)}")
