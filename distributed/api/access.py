"""Who may use the `/distributed/...` API: the `AccessPolicy` (docs/security.md).

ComfyUI serves every route registered here under `/api/distributed/...` too.

- Routes that change state or start processes refuse requests from another web origin (Origin/Host
  check, and the `X-Distributed-Request` header a cross-site form cannot send). The check is ours,
  so it holds also when ComfyUI runs with `--enable-cors-header` and its own origin check is off.
- With a shared API token (env `DISTRIBUTED_API_TOKEN`), those routes also need the token, sent as
  `Authorization: Bearer <token>` or `X-Distributed-Token`; a missing or wrong one gets 401.
- Reading status stays open, unless the token is set and `DISTRIBUTED_API_TOKEN_READS=1` asks for
  the token on reads too.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from aiohttp import web

from .errors import Handler, error_response, mapped

logger = logging.getLogger(__name__)

REQUEST_HEADER = "X-Distributed-Request"
"""Sent by the panel on every change: a cross-site form cannot send it, and a cross-site script
cannot either without a CORS preflight that ComfyUI does not allow for this header."""
TOKEN_HEADER = "X-Distributed-Token"
TOKEN_ENV = "DISTRIBUTED_API_TOKEN"
PROTECT_READS_ENV = "DISTRIBUTED_API_TOKEN_READS"


def foreign_origin(request: web.Request) -> str | None:
    """Why a state-changing request must be refused as coming from another web origin, or None.

    Requests without an Origin header come from programs, not web pages (browsers always send one
    with POST, PATCH and DELETE), and are allowed.
    """
    if request.headers.get("Sec-Fetch-Site") in ("cross-site", "same-site"):
        return "request from another web site refused"
    origin = request.headers.get("Origin")
    if origin is None:
        return None
    origin_host = urlsplit(origin).netloc.lower() if origin != "null" else ""
    if not origin_host or origin_host != request.headers.get("Host", "").lower():
        return f"request from origin {origin!r} refused: it does not match this server"
    if request.headers.get(REQUEST_HEADER) != "1":
        return f"browser requests that change state must carry the {REQUEST_HEADER} header"
    return None


@dataclass(frozen=True)
class AccessPolicy:
    """Who may use the API: the origin check always, the shared token when one is configured."""

    token: str | None = None
    protect_reads: bool = False
    """Ask for the token on reads too; only meaningful with a token."""

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> AccessPolicy:
        token = environ.get(TOKEN_ENV, "").strip() or None
        protect_reads = token is not None and environ.get(PROTECT_READS_ENV, "").strip().lower() in ("1", "true", "yes")
        return cls(token, protect_reads)

    def token_problem(self, request: web.Request) -> str | None:
        """Why the request's token is not accepted, or None (always None without a configured token)."""
        if self.token is None:
            return None
        authorization = request.headers.get("Authorization", "")
        scheme, _, value = authorization.partition(" ")
        presented = value.strip() if scheme.lower() == "bearer" else request.headers.get(TOKEN_HEADER)
        if not presented:
            return f"this master's API needs its token: send Authorization: Bearer <token> or {TOKEN_HEADER}"
        if not hmac.compare_digest(presented.encode(), self.token.encode()):
            return "wrong API token"
        return None

    def guard(self, handler: Handler) -> Handler:
        """Wraps a state-changing handler: origin check (403), then the token (401), then error mapping."""

        async def guarded(request: web.Request) -> web.StreamResponse:
            problem = foreign_origin(request)
            if problem is not None:
                logger.warning("Refused %s %s: %s", request.method, request.path, problem)
                return error_response(403, problem)
            return await self._with_token(handler, request)

        return guarded

    def reader(self, handler: Handler) -> Handler:
        """Wraps a reading handler: open, unless reads are protected by the token."""

        async def read(request: web.Request) -> web.StreamResponse:
            if not self.protect_reads:
                return await mapped(handler)(request)
            return await self._with_token(handler, request)

        return read

    async def _with_token(self, handler: Handler, request: web.Request) -> web.StreamResponse:
        problem = self.token_problem(request)
        if problem is not None:
            logger.warning("Refused %s %s: %s", request.method, request.path, problem)
            response = error_response(401, problem)
            response.headers["WWW-Authenticate"] = 'Bearer realm="distributed"'
            return response
        return await mapped(handler)(request)


guard = AccessPolicy().guard
"""The origin check alone, for routes outside the master's API (e.g. results served by a worker)."""
