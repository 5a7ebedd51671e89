"""pytest's default import mode keys test modules by file name, so two test files with one name in
different folders stop the whole run at collection. This check names the clash before CI does."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]


def test_every_test_module_name_is_unique_across_folders():
    names = Counter(path.name for path in TESTS.rglob("*.py") if path.name not in {"__init__.py", "conftest.py"})
    clashes = sorted(name for name, count in names.items() if count > 1)
    assert clashes == []
