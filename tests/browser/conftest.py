"""Browser-test fixtures: Debian's Chromium, and the ComfyUI frontends every browser test runs against.

Each browser test module runs twice: against the frontend the pinned ComfyUI serves (1.32.9 with
ComfyUI 0.3.75) and against the newest one scripts/env.sh caches (`--front-end-root`). The `frontend`
fixture is module-scoped, so pytest runs a module's tests on one frontend, then all of them on the
next, and each module starts its master once per frontend.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

playwright_api = pytest.importorskip("playwright.sync_api")

from tests.browser.ui import Frontend  # noqa: E402

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
    "--disable-sync", "--no-first-run",
]


def newest_frontend() -> Any:
    version = os.environ.get("DISTRIBUTED_NEW_FRONTEND_VERSION", "")
    root = Path(os.environ.get("DISTRIBUTED_NEW_FRONTEND_ROOT", ""))
    if version and (root / "index.html").is_file():
        return pytest.param(Frontend(version, root), id=version)
    return pytest.param(
        Frontend("newest"), id="newest",
        marks=pytest.mark.skip(reason="DISTRIBUTED_NEW_FRONTEND_ROOT is not set; run through scripts/test.sh, which caches it"),
    )


@pytest.fixture(scope="module", params=[pytest.param(Frontend("pinned"), id="pinned"), newest_frontend()])
def frontend(request: pytest.FixtureRequest) -> Frontend:
    return request.param


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """One Chromium per module. Not per session: playwright's sync API keeps an event loop running in
    the main thread while it is open, and every async test after the browser tests would then fail
    with "cannot be called from a running event loop"."""
    if not CHROMIUM.exists():
        pytest.skip("needs Debian's chromium at /usr/bin/chromium (apt-get install -y chromium)")
    with playwright_api.sync_playwright() as playwright:
        instance = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        try:
            yield instance
        finally:
            instance.close()
