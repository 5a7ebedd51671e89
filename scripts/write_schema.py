"""Writes docs/workers.schema.json from the registry models: python scripts/write_schema.py"""

from __future__ import annotations

import json
import sys
from pathlib import Path

PROJECT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT))

from distributed.config.models import RegistryFile  # noqa: E402 (after the path is set)

schema = {"$schema": "https://json-schema.org/draft/2020-12/schema", **RegistryFile.model_json_schema()}
(PROJECT / "docs" / "workers.schema.json").write_text(json.dumps(schema, indent=2) + "\n")
