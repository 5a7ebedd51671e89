"""Turns pydantic's validation errors into our ConfigError, naming the field a user must fix."""

from __future__ import annotations

import re

from pydantic import ValidationError

from ..errors import ConfigError


def describe_validation_error(error: ValidationError, prefix: str = "") -> ConfigError:
    """The first problem of a pydantic error as a ConfigError naming the field ("workers.0.port")."""
    first = error.errors()[0]
    parts = [str(part) for part in (*([prefix] if prefix else []), *first["loc"])]
    message = first["msg"].removeprefix("Value error, ")
    named = re.match(r"^(\w+): (.*)$", message)
    if named:  # a whole-model check that names its field ("port: a remote worker needs a port")
        parts.append(named.group(1))
        message = named.group(2)
    location = ".".join(parts)
    return ConfigError(f"{location}: {message}" if location else message, field=location or None)
