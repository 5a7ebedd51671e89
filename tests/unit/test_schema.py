"""The JSON Schema published in docs/ is the one the registry validates with."""

from __future__ import annotations

import json
from pathlib import Path

from distributed.config.models import RegistryFile

SCHEMA = Path(__file__).resolve().parents[2] / "docs" / "workers.schema.json"


def test_published_schema_matches_the_registry_models() -> None:
    published = json.loads(SCHEMA.read_text())
    published.pop("$schema")
    assert published == RegistryFile.model_json_schema(), "run scripts/write_schema.py"
