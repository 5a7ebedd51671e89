"""Turns pydantic's validation errors into our ConfigError, naming the field a user must fix."""

from __future__ import annotations

import re

from pydantic import ValidationError

from ..errors import ConfigError


def _problem(detail: dict, prefix: str) -> tuple[str | None, str]:
    """(dotted field, message) of one pydantic problem."""
    parts = [str(part) for part in (*([prefix] if prefix else []), *detail["loc"])]
    message = detail["msg"].removeprefix("Value error, ")
    named = re.match(r"^(\w+): (.*)$", message)
    if named:  # a whole-model check that names its field ("port: a remote worker needs a port")
        parts.append(named.group(1))
        message = named.group(2)
    location = ".".join(parts)
    return location or None, f"{location}: {message}" if location else message


def describe_validation_error(error: ValidationError, prefix: str = "", also: list[str] | None = None) -> ConfigError:
    """Every problem of a pydantic error (and `also`, found another way) as one ConfigError; its
    `field` is the first problem's dotted location ("workers.0.port")."""
    problems = [_problem(detail, prefix) for detail in error.errors()]
    messages = [message for _, message in problems] + [message for message in also or [] if message not in [m for _, m in problems]]
    return ConfigError("; ".join(messages), field=problems[0][0] if problems else None)
