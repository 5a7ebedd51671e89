"""Routes every instance with this extension serves about its own model folders (master or worker).

    GET  /distributed/models                this instance's model files with sizes (and sha256 with ?sha256=1);
                                            ?files=0: only the free space per folder kind
    GET  /distributed/models/upload         where an upload stands         ?folder=&name=&size=&key=[&sha256=]
    PUT  /distributed/models/upload         append a chunk (raw body)      ?folder=&name=&size=&key=&offset=
    POST /distributed/models/upload/finish  check and put in place         ?folder=&name=&size=&key=&sha256=

They start nothing, but the upload routes write files, so they pass the access policy like every
other state-changing route: no other web origin, and the API token when one is configured (the
master sends the worker's saved token). Everything written stays inside ComfyUI's model folders
(`transport/provision/store.py`).
"""

from __future__ import annotations

from aiohttp import web

from ..errors import ConfigError
from ..transport.provision.library import ModelLibrary
from ..transport.provision.remote import FINISH_PATH, MODELS_PATH, UPLOAD_PATH
from ..transport.provision.store import ModelStore, Upload
from .access import AccessPolicy

READ_PIECE = 1 << 20
TRUE_VALUES = ("1", "true", "yes")


def _upload(request: web.Request) -> Upload:
    query = request.query
    return Upload.parse(query.get("folder"), query.get("name"), query.get("size"), query.get("key"))


def add_model_store_routes(routes: web.RouteTableDef, policy: AccessPolicy, library: ModelLibrary, store: ModelStore) -> None:
    guard, reader = policy.guard, policy.reader

    @routes.get(MODELS_PATH)
    @reader
    async def list_models(request: web.Request) -> web.Response:
        with_sha256 = request.query.get("sha256", "").lower() in TRUE_VALUES
        with_files = request.query.get("files", "1").lower() in TRUE_VALUES
        return web.json_response(await library.listing(with_files, with_sha256))

    @routes.get(UPLOAD_PATH)
    @guard
    async def upload_status(request: web.Request) -> web.Response:
        return web.json_response(await store.status(_upload(request), request.query.get("sha256") or None))

    @routes.put(UPLOAD_PATH)
    @guard
    async def upload_chunk(request: web.Request) -> web.Response:
        upload = _upload(request)
        try:
            offset = int(request.query.get("offset", ""))
        except ValueError:
            raise ConfigError("offset: the byte offset this chunk starts at is required", field="offset") from None
        if not 0 <= offset <= upload.size:
            raise ConfigError(f"offset: must be between 0 and the size {upload.size}", field="offset")
        length = await store.receive(upload, offset, request.content.iter_chunked(READ_PIECE))
        return web.json_response({"offset": length})

    @routes.post(FINISH_PATH)
    @guard
    async def upload_finish(request: web.Request) -> web.Response:
        return web.json_response(await store.finish(_upload(request), request.query.get("sha256", "")))
