"""Reads a request's JSON body into one of the API's pydantic models."""

from __future__ import annotations

import json
from typing import TypeVar

from aiohttp import web
from pydantic import BaseModel, ValidationError

from ..config.validation import describe_validation_error
from ..errors import ConfigError

Body = TypeVar("Body", bound=BaseModel)


async def read_body(request: web.Request, model: type[Body]) -> Body:
    """The request's JSON as `model`; ConfigError names the bad field."""
    try:
        data = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ConfigError("the request body is not valid JSON") from None
    if not isinstance(data, dict):
        raise ConfigError("the request body must be a JSON object")
    try:
        return model.model_validate(data)
    except ValidationError as error:
        raise describe_validation_error(error) from None
