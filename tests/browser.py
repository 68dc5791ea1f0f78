"""Headless Chromium on the ComfyUI web UI through Playwright: the system browser (/usr/bin/chromium), no download."""
from __future__ import annotations

import contextlib
import os
from pathlib import Path

CHROMIUM = Path(os.environ.get("LSD_CHROMIUM", "/usr/bin/chromium"))
ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage", "--disable-extensions",
]
VIEWPORT = {"width": 1400, "height": 900}


def available() -> str | None:
    """None when the browser tests can run, else why not."""
    if not CHROMIUM.exists():
        return f"no Chromium at {CHROMIUM} (scripts/provision-host.sh installs Debian's chromium)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright package is not installed (requirements-host.txt)"
    return None


@contextlib.contextmanager
def open_ui(url: str, timeout_ms: int = 90_000):
    """A page with the ComfyUI UI loaded (window.app ready); page.errors collects uncaught page errors."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=ARGS)
        try:
            page = browser.new_page(viewport=VIEWPORT)
            page.set_default_timeout(timeout_ms)
            page.errors = []
            page.on("pageerror", lambda exc: page.errors.append(str(exc)))
            page.goto(url)
            page.wait_for_function(
                "() => window.app && window.app.graph && window.LiteGraph && app.extensions?.length > 0"
                " && document.querySelector('#graph-canvas')")
            yield page
        finally:
            browser.close()
