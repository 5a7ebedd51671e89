"""Who may use the `/distributed/...` API: the `AccessPolicy` (docs/security.md).

ComfyUI serves every route registered here under `/api/distributed/...` too.

- Every route, reading or changing, refuses a `Host` that is not an IP address, `localhost` or a
  name the user allowed (`HostRule`): a page whose own name was re-pointed at this machine (DNS
  rebinding) is same-origin as far as the browser knows, so only the name it uses gives it away.
- Routes that change state or start processes refuse requests from another web origin (Origin/Host
  check, and the `X-Distributed-Request` header a cross-site form cannot send). The check is ours,
  so it holds also when ComfyUI runs with `--enable-cors-header` and its own origin check is off.
  With that flag every web page could read ComfyUI's answers, so reads get the origin check too.
- With a shared API token (env `DISTRIBUTED_API_TOKEN`), those routes also need the token, sent as
  `Authorization: Bearer <token>` or `X-Distributed-Token`; a missing or wrong one gets 401.
- Callers on other machines (a peer address that is not loopback) need the token on every route,
  reads included (they show the configuration and logs); with no token set they are refused (403).
  This is what makes a master safe to use as a host (docs/hosts.md): its processes and configuration
  answer the master that holds its token, and its own user at the machine.
- Reading from this machine stays open, unless the token is set and `DISTRIBUTED_API_TOKEN_READS=1`
  asks for the token on reads too.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
import re
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from aiohttp import web

from ..workers.local.command import MASTER_API_ENV_PREFIX
from ..workers.lock import worker_token
from .errors import Handler, error_response, mapped

logger = logging.getLogger(__name__)

REQUEST_HEADER = "X-Distributed-Request"
"""Sent by the panel on every change: a cross-site form cannot send it, and a cross-site script
cannot either without a CORS preflight that ComfyUI does not allow for this header."""
TOKEN_HEADER = "X-Distributed-Token"
TOKEN_ENV = MASTER_API_ENV_PREFIX + "TOKEN"
PROTECT_READS_ENV = MASTER_API_ENV_PREFIX + "TOKEN_READS"
ALLOWED_HOSTS_ENV = "DISTRIBUTED_ALLOWED_HOSTS"
"""Comma-separated host names the API answers to besides IP addresses and localhost."""
ALLOWED_HOSTS_SETTING = "master.allowed_hosts"
_HOST_HEADER = re.compile(r"^(?:\[(?P<ipv6>[0-9A-Fa-f:.]+)\]|(?P<name>[A-Za-z0-9._-]+))(?::\d{1,5})?$")


def host_name(host_header: str) -> tuple[str, bool] | None:
    """(name, is an IP literal) of a Host header, lowercased; None when it is not a plain host[:port]."""
    match = _HOST_HEADER.match(host_header.strip())
    if match is None:
        return None
    if match.group("ipv6") is not None:
        try:
            ipaddress.IPv6Address(match.group("ipv6"))
        except ValueError:
            return None
        return match.group("ipv6").lower(), True
    name = match.group("name").lower().removesuffix(".")
    try:
        ipaddress.IPv4Address(name)
    except ValueError:
        return name, False
    return name, True


@dataclass(frozen=True)
class HostRule:
    """Which `Host` the API answers to: any IP address, `localhost`, and the names the user allowed.

    A DNS rebinding attack needs a name the attacker controls, so an IP literal is always safe; a
    name is safe only when the user said so, in the environment (`names`) or in workers.json
    (`configured`, read at every request so an edit of the file applies at once).
    """

    names: frozenset[str] = frozenset()
    configured: Callable[[], Collection[str]] = field(default=lambda: (), compare=False)

    @classmethod
    def from_environ(cls, environ: Mapping[str, str], configured: Callable[[], Collection[str]] = lambda: ()) -> HostRule:
        names = {name.strip().lower().removesuffix(".") for name in environ.get(ALLOWED_HOSTS_ENV, "").split(",")}
        return cls(frozenset(name for name in names if name), configured)

    def problem(self, request: web.Request) -> str | None:
        """Why the request's Host is refused, or None. A request without Host (HTTP/1.0 programs) passes."""
        header = request.headers.get("Host")
        if header is None:
            return None
        parsed = host_name(header)
        if parsed is None:
            return f"the Host header {header[:100]!r} is not a host name or address"
        name, literal = parsed
        allowed = self.names | {configured.lower().removesuffix(".") for configured in self.configured()}
        if literal or name == "localhost" or name in allowed:
            return None
        return (f"requests for host '{name}' are refused, so that a web page cannot reach this master by re-pointing "
                f"its own name here (DNS rebinding); open the master by its IP address or localhost, or allow the name in "
                f"{ALLOWED_HOSTS_SETTING} (workers.json) or {ALLOWED_HOSTS_ENV}")


def is_loopback_peer(request: web.Request) -> bool:
    """Whether the request comes from this machine: its peer address is a loopback address (an IPv4
    one mapped into IPv6 included). No peer address at all counts as another machine."""
    try:
        address = ipaddress.ip_address((request.remote or "").split("%")[0])
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback


def foreign_origin(request: web.Request, change: bool = True) -> str | None:
    """Why a browser request must be refused as coming from another web origin, or None.

    Requests without an Origin header come from programs, not web pages (browsers always send one
    with POST, PATCH and DELETE, and with any cross-origin read), and are allowed. A `change` from
    the master's own page must also carry the REQUEST_HEADER.
    """
    if request.headers.get("Sec-Fetch-Site") in ("cross-site", "same-site"):
        return "request from another web site refused"
    origin = request.headers.get("Origin")
    if origin is None:
        return None
    origin_host = urlsplit(origin).netloc.lower() if origin != "null" else ""
    if not origin_host or origin_host != request.headers.get("Host", "").lower():
        return f"request from origin {origin[:100]!r} refused: it does not match this server"
    if change and request.headers.get(REQUEST_HEADER) != "1":
        return f"browser requests that change state must carry the {REQUEST_HEADER} header"
    return None


@dataclass(frozen=True)
class AccessPolicy:
    """Who may use the API: the Host rule and the origin check always, the shared token when one is configured."""

    token: str | None = None
    protect_reads: bool = False
    """Ask for the token on reads too; only meaningful with a token."""
    cors_enabled: bool = False
    """ComfyUI runs with `--enable-cors-header`: any page could read an answer, so reads get the origin check."""
    hosts: HostRule | None = HostRule()
    """None only for routes reached by whatever name a master uses for this machine (a worker's results)."""
    remote_rule: bool = True
    """Callers on other machines need the token on every route, and are refused when none is set; off
    only for a worker's results route, which its master fetches from wherever it runs."""

    @classmethod
    def from_environ(cls, environ: Mapping[str, str], cors_enabled: bool = False,
                     allowed_hosts: Callable[[], Collection[str]] = lambda: ()) -> AccessPolicy:
        """The policy from the environment; `allowed_hosts` gives the names workers.json allows."""
        token = environ.get(TOKEN_ENV, "").strip() or None
        protect_reads = token is not None and environ.get(PROTECT_READS_ENV, "").strip().lower() in ("1", "true", "yes")
        return cls(token, protect_reads, cors_enabled, HostRule.from_environ(environ, allowed_hosts))

    @classmethod
    def for_results(cls, environ: Mapping[str, str]) -> AccessPolicy:
        """The policy of the route a master fetches share results from on this instance (as a worker).

        The master reaches a worker by any name it was given (a tunnel's, a pod proxy's), so no Host
        rule: ComfyUI's own `/view` on the same port is no better guarded. The origin check and the
        token still apply; a master sends the token as the worker's `auth_token`.
        """
        policy = cls.from_environ(environ)
        return cls(policy.token, policy.protect_reads, hosts=None, remote_rule=False)

    @classmethod
    def for_worker_routes(cls, environ: Mapping[str, str]) -> AccessPolicy:
        """The policy of routes a master uses on this instance as a worker, which write files (models).

        A master reaches a worker by whatever name it was given (a pod proxy's, a tunnel's), so a name
        cannot be asked to be allowed beforehand. A token does what the Host rule does against a page
        that re-points its own name here: such a page cannot know it. So the Host rule applies unless
        this instance has a token (the API's, or the worker lock of workers/lock.py). A locked worker's
        lock already asks every caller for its token, so callers on other machines pass on that alone.
        """
        policy = cls.from_environ(environ)
        if policy.token is None and worker_token(environ) is None:
            return policy
        return cls(policy.token, policy.protect_reads, hosts=None, remote_rule=policy.token is not None)

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
        """Wraps a state-changing handler: Host, origin and remote-caller checks (403), then the token
        (401), then error mapping."""

        async def guarded(request: web.Request) -> web.StreamResponse:
            refused = self._refused(request, change=True)
            if refused is not None:
                return refused
            return await self._with_token(handler, request)

        return guarded

    def reader(self, handler: Handler) -> Handler:
        """Wraps a reading handler: the Host check, the origin check under `cors_enabled`, the
        remote-caller check, and the token when reads are protected or the caller is on another machine."""

        async def read(request: web.Request) -> web.StreamResponse:
            refused = self._refused(request, change=False)
            if refused is not None:
                return refused
            if not self.protect_reads and not self._needs_token_from(request):
                return await mapped(handler)(request)
            return await self._with_token(handler, request)

        return read

    def privileged(self, handler: Handler) -> Handler:
        """Wraps a read that hands out secrets (a host's worker tokens): every caller needs the token,
        loopback included, and without a configured token the route is refused."""

        async def read(request: web.Request) -> web.StreamResponse:
            refused = self._refused(request, change=False)
            if refused is None and self.token is None:
                problem = f"this ComfyUI has no API token, and this route answers only with it: start it with {TOKEN_ENV}"
                logger.warning("Refused %s %s: %s", request.method, request.path, problem)
                refused = error_response(403, problem)
            if refused is not None:
                return refused
            return await self._with_token(handler, request)

        return read

    def _needs_token_from(self, request: web.Request) -> bool:
        return self.remote_rule and not is_loopback_peer(request)

    def _refused(self, request: web.Request, change: bool) -> web.Response | None:
        problem = self.hosts.problem(request) if self.hosts is not None else None
        if problem is None and (change or self.cors_enabled):
            problem = foreign_origin(request, change)
        if problem is None and self.token is None and self._needs_token_from(request):
            problem = (f"requests from another machine ({request.remote or 'unknown address'}) are refused: this ComfyUI has no "
                       f"API token; start it with {TOKEN_ENV}=<a long random string> and send that token (docs/hosts.md)")
        if problem is None:
            return None
        logger.warning("Refused %s %s: %s", request.method, request.path, problem)
        return error_response(403, problem)

    async def _with_token(self, handler: Handler, request: web.Request) -> web.StreamResponse:
        problem = self.token_problem(request)
        if problem is not None:
            logger.warning("Refused %s %s: %s", request.method, request.path, problem)
            response = error_response(401, problem)
            response.headers["WWW-Authenticate"] = 'Bearer realm="distributed"'
            return response
        return await mapped(handler)(request)
