"""Secrets in worker settings (bearer token, custom header values): how the API shows them and how a
round trip through the panel keeps them.

A secret is never sent back to a browser: the API shows the last four characters behind a mask.
The panel edits that masked view, so a masked value coming back means "keep what is stored".
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .models import WorkerConfig

MASK = "\u2022\u2022\u2022\u2022"
"""Prefix of a masked secret ("••••abcd"). A real secret never starts with it (refused on input), so
a masked value coming back in a PATCH can only mean "keep what is stored"."""
HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,128}$")
CONNECTION_HEADERS = ("host", "content-length", "transfer-encoding", "connection", "upgrade")
"""Headers the connection sets itself; a worker's settings cannot replace them."""


def mask_secret(secret: str) -> str:
    """Shows at most the last 4 characters, and none of a short secret."""
    return MASK + secret[-4:] if len(secret) >= 12 else MASK


def check_secret(value: str, what: str) -> str:
    """A secret as given by a user: never a masked value, never a line break (header injection)."""
    if value.startswith(MASK):
        raise ValueError(f"{what} looks like a masked value; enter the real secret")
    if any(ch in value for ch in "\r\n\0"):
        raise ValueError(f"{what} must not contain line breaks")
    return value


def check_headers(headers: dict[str, str]) -> dict[str, str]:
    for name, value in headers.items():
        if not HEADER_NAME.match(name):
            raise ValueError(f"header name {name!r} is not a valid HTTP header name")
        if name.lower() in CONNECTION_HEADERS:
            raise ValueError(f"header {name} is set by the connection itself and cannot be configured")
        check_secret(value, f"the value of header {name}")
    return headers


def tls_warning(worker: WorkerConfig) -> str | None:
    """The warning a worker's TLS settings deserve, or None."""
    if not worker.tls_verify and worker.base_url.startswith("https:"):
        return "TLS certificate verification is off: anyone on the network path can read and change this worker's traffic"
    return None


def public_view(worker: WorkerConfig) -> dict[str, Any]:
    """A worker as the API shows it: secrets masked, plus `warnings` a user should see."""
    view = worker.model_dump(mode="json")
    if worker.auth_token:
        view["auth_token"] = mask_secret(worker.auth_token)
    view["headers"] = {name: mask_secret(value) for name, value in worker.headers.items()}
    warning = tls_warning(worker)
    view["warnings"] = [warning] if warning else []
    return view


def keep_masked_secrets(current: WorkerConfig, changes: dict[str, Any]) -> dict[str, Any]:
    """Changes with masked secrets replaced by the stored values they stand for.

    The panel edits the masked view; sending a masked value back unchanged keeps the secret, a new
    value replaces it, null (or a header left out) removes it.
    """
    kept = dict(changes)
    token = kept.get("auth_token")
    if isinstance(token, str) and token.startswith(MASK) and current.auth_token and token == mask_secret(current.auth_token):
        kept["auth_token"] = current.auth_token
    if "headers" in kept and kept["headers"] is None:
        kept["headers"] = {}
    headers = kept.get("headers")
    if isinstance(headers, dict):
        kept["headers"] = {
            name: current.headers[name]
            if isinstance(value, str) and name in current.headers and value == mask_secret(current.headers[name]) else value
            for name, value in headers.items()
        }
    return kept
