"""Secrets in worker settings (bearer token, custom header values, credentials in a url): how the API
shows them, how a round trip through the panel keeps them, and where they may be sent.

A secret is never sent back to a browser: the API shows the last four characters behind a mask.
The panel edits that masked view, so a masked value coming back means "keep what is stored", but
only for the address the secret was saved for: a secret stays bound to its worker's type, url, host
and port, so nobody who can read the masked view can have it sent somewhere else.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from ..errors import ConfigError

if TYPE_CHECKING:
    from .models import WorkerConfig

MASK = "\u2022\u2022\u2022\u2022"
"""Prefix of a masked secret ("••••abcd"). A real secret never starts with it (refused on input), so
a masked value coming back in a PATCH can only mean "keep what is stored"."""
HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,64}$")
SENDABLE = re.compile(r"^[\t\x20-\x7e]*$")
"""What a header value may hold: visible ASCII, spaces and tabs (no line breaks: header injection)."""
MAX_SECRET_LENGTH = 4096
MAX_HEADERS = 32
CONNECTION_HEADERS = ("host", "content-length", "transfer-encoding", "connection", "upgrade")
"""Headers the connection sets itself; a worker's settings cannot replace them."""
ADDRESS_FIELDS = ("type", "url", "host", "port")
"""Where a worker's secrets go: a change of any of these needs the secrets typed again."""


def mask_secret(secret: str) -> str:
    """Shows at most the last 4 characters, and none of a short secret."""
    return MASK + secret[-4:] if len(secret) >= 12 else MASK


def check_secret(value: str, what: str) -> str:
    """A secret as given by a user: never a masked value, never a line break (header injection)."""
    if value.startswith(MASK):
        raise ValueError(f"{what} looks like a masked value; enter the real secret")
    if len(value) > MAX_SECRET_LENGTH:
        raise ValueError(f"{what} is longer than {MAX_SECRET_LENGTH} characters")
    if not SENDABLE.match(value):
        raise ValueError(f"{what} must be visible ASCII characters, without line breaks")
    return value


def check_headers(headers: dict[str, str]) -> dict[str, str]:
    seen: set[str] = set()
    for name, value in headers.items():
        if not HEADER_NAME.match(name):
            raise ValueError(f"header name {name[:70]!r} is not a valid HTTP header name (at most 64 characters)")
        if name.lower() in CONNECTION_HEADERS:
            raise ValueError(f"header {name} is set by the connection itself and cannot be configured")
        if name.lower() in seen:
            raise ValueError(f"header {name} is given twice (header names are not case-sensitive)")
        seen.add(name.lower())
        check_secret(value, f"the value of header {name}")
    return headers


def url_credentials(url: str) -> str | None:
    """The `user:password` part of a url, or None."""
    userinfo, at, _ = urlsplit(url).netloc.rpartition("@")
    return userinfo if at else None


def public_url(url: str) -> str:
    """A url as the API shows it: credentials in it masked like any other secret."""
    parts = urlsplit(url)
    userinfo, at, host = parts.netloc.rpartition("@")
    if not at:
        return url
    return urlunsplit(parts._replace(netloc=f"{mask_secret(userinfo)}@{host}"))


def _is_loopback(host: str | None) -> bool:
    if host is None or host == "localhost":
        return host is not None
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def connection_warnings(worker: WorkerConfig) -> list[str]:
    """What a user should hear about a worker's connection settings: secrets that can be read or
    captured on the way."""
    warnings = []
    parts = urlsplit(worker.base_url)
    if not worker.tls_verify and parts.scheme == "https":
        warnings.append("TLS certificate verification is off: anyone on the network path can read and change this worker's traffic")
    sent = [what for what, present in (("auth token", worker.auth_token), ("header values", worker.headers),
                                       ("url credentials", url_credentials(worker.base_url))) if present]
    if sent and parts.scheme == "http" and not _is_loopback(parts.hostname):
        warnings.append(f"its {' and '.join(sent)} travel over plain http://: anyone on the network path can read them; use https://")
    return warnings


def public_view(worker: WorkerConfig) -> dict[str, Any]:
    """A worker as the API shows it: secrets masked, plus `warnings` a user should see."""
    view = worker.model_dump(mode="json")
    if worker.auth_token:
        view["auth_token"] = mask_secret(worker.auth_token)
    if worker.url:
        view["url"] = public_url(worker.url)
    view["headers"] = {name: mask_secret(value) for name, value in worker.headers.items()}
    view["warnings"] = connection_warnings(worker)
    return view


def _address(fields: Mapping[str, Any]) -> tuple[Any, ...]:
    url = fields.get("url")
    return tuple(url.rstrip("/") if name == "url" and isinstance(url, str) else fields.get(name) for name in ADDRESS_FIELDS)


def keep_masked_secrets(current: WorkerConfig, changes: dict[str, Any]) -> dict[str, Any]:
    """Changes with masked secrets replaced by the stored values they stand for.

    The panel edits the masked view; sending a masked value back unchanged keeps the secret, a new
    value replaces it, null (or a header left out) removes it. A masked value stands for the stored
    secret only while the address is the one it was saved for: otherwise ConfigError names the
    secret to type again, so that a stored secret is never sent to an address it was not saved for.
    """
    kept = dict(changes)
    url = kept.get("url")
    if isinstance(url, str) and current.url and url.rstrip("/") == public_url(current.url):
        kept["url"] = current.url  # the masked view of the stored url: the same address
    same_address = _address({**current.model_dump(), **kept}) == _address(current.model_dump())

    def restored(value: Any, stored: str | None, field: str) -> Any:
        if not (isinstance(value, str) and stored is not None and value == mask_secret(stored)):
            return value  # a new value, or a masked value of nothing stored: validation refuses the latter
        if not same_address:
            raise ConfigError(f"{field}: the worker's address changed, so the stored secret is not sent there; enter it again",
                              field=field)
        return stored

    if "auth_token" in kept:
        kept["auth_token"] = restored(kept["auth_token"], current.auth_token, "auth_token")
    if "headers" in kept and kept["headers"] is None:
        kept["headers"] = {}
    headers = kept.get("headers")
    if isinstance(headers, dict):
        kept["headers"] = {name: restored(value, current.headers.get(name), f"headers.{name}") for name, value in headers.items()}
    return kept
