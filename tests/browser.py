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


# Every console.warn/error of the page with the stack of its call, so a message can be traced to the script that
# caused it (a frontend's deprecation warning is printed by the frontend, but from inside the caller's stack).
RECORD_CONSOLE = """
window.__consoleCalls = [];
const seen = new Set();
for (const level of ['warn', 'error']) {
  const print = console[level].bind(console);
  console[level] = (...args) => {
    const call = {level, text: args.map(String).join(' ').slice(0, 500), stack: new Error().stack};
    const key = call.level + call.text + call.stack;
    if (!seen.has(key)) { seen.add(key); window.__consoleCalls.push(call); }
    print(...args);
  };
}
"""
# LiteGraph prints each deprecation warning once per page; repeated, one caused by an extension is not hidden behind
# the same warning caused earlier by the frontend itself.
REPEAT_WARNINGS = "() => { LiteGraph.alwaysRepeatWarnings = true; }"
GRAPH_READY = "() => window.app && ('isGraphReady' in app ? app.isGraphReady : !!app.graph)"


@contextlib.contextmanager
def open_ui(url: str, timeout_ms: int = 90_000):
    """A page with the ComfyUI UI loaded (its graph ready); page.errors collects uncaught page errors, page.console
    the browser's own console messages (type, text, url of their source)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=ARGS)
        try:
            page = browser.new_page(viewport=VIEWPORT)
            page.set_default_timeout(timeout_ms)
            page.errors, page.console = [], []
            page.on("pageerror", lambda exc: page.errors.append(str(exc)))
            page.on("console", lambda m: page.console.append((m.type, m.text, m.location.get("url", ""))))
            page.add_init_script(RECORD_CONSOLE)
            page.goto(url)
            page.wait_for_function(f"() => ({GRAPH_READY})() && window.LiteGraph && app.extensions?.length > 0"
                                   " && document.querySelector('#graph-canvas')")
            yield page
        finally:
            browser.close()


def console_of(page, *markers: str) -> list[str]:
    """The page's console warnings and errors that scripts or routes under `markers` (URL paths) caused: printed from
    a call stack through one, or about a resource or source under one."""
    called = page.evaluate("() => window.__consoleCalls")
    caused = [f"{c['level']}: {c['text']}" for c in called if any(m in c["stack"] for m in markers)]
    caused += [f"{kind}: {text} ({url})" for kind, text, url in page.console
               if kind in ("warning", "error") and any(m in url for m in markers)]
    return caused
