"""What the browser tests share about ComfyUI's own page: its sidebar and its Templates browser.

Located by role and accessible name only, so the same code drives the pinned frontend and the newest.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from playwright.sync_api import Page, expect


@dataclass(frozen=True)
class Frontend:
    """One ComfyUI frontend: `pinned` is the one ComfyUI serves itself; otherwise a static folder."""

    name: str
    root: Path | None = None

    @property
    def is_pinned(self) -> bool:
        return self.root is None

    def master_args(self) -> list[str]:
        return [] if self.root is None else ["--front-end-root", str(self.root)]


DISTRIBUTED_TAB = "Distributed GPUs"
"""The sidebar button's accessible name: the tab's tooltip, in both frontends (web/main.js)."""

PACK_TEMPLATES = "ComfyUI Distributed GPU"
"""The pack's entry in the Templates browser (locales/en/main.json names the folder's category)."""

PAGE_LOAD_MS = 90_000
"""ComfyUI's first paint on a busy two-core machine, with the newest frontend's larger bundle."""

UI_TIMEOUT_MS = 30_000
"""How long a browser test waits for the page by default."""


@contextmanager
def opened_page(browser: Any, url: str, width: int = 1400, height: int = 900) -> Iterator[Page]:
    """A page of its own browser context at `url`, closed (with its context) at the end."""
    context = browser.new_context(viewport={"width": width, "height": height})
    page = context.new_page()
    page.set_default_timeout(UI_TIMEOUT_MS)
    try:
        page.goto(url)
        yield page
    finally:
        context.close()


def sidebar_button(page: Page, name: str) -> Any:
    return page.get_by_role("button", name=name, exact=True)


def open_distributed_tab(page: Page) -> Any:
    """Opens the Distributed tab and returns the panel once its master card is drawn."""
    sidebar_button(page, DISTRIBUTED_TAB).click(timeout=PAGE_LOAD_MS)
    panel = page.locator(".dgpu-panel")
    expect(panel.get_by_role("article", name="Master")).to_be_visible()
    return panel


def open_pack_templates(page: Page) -> Any:
    """Opens Templates → ComfyUI Distributed GPU and returns the dialog."""
    sidebar_button(page, "Templates").click(timeout=PAGE_LOAD_MS)
    dialog = page.get_by_role("dialog").filter(has=page.get_by_role("heading", name="Templates"))
    # The first opening fetches and lays out every core template: as slow as a page load here.
    dialog.get_by_role("button", name=PACK_TEMPLATES, exact=True).click(timeout=PAGE_LOAD_MS)
    return dialog
