"""The ComfyUI-Distributed template in a real browser, on the test cluster's master (tests/conftest.py `cluster`):
every node known with the extension installed, and the same checks as every bundled template (tests/test_browser.py).
A module of its own: Playwright's sync API runs one browser session per thread, and test_browser.py holds one per
frontend for its whole module."""
from __future__ import annotations

import pytest

import browser
from bundled_workflows import DISTRIBUTED
from test_browser import HELPERS, assert_template_opens

pytestmark = [pytest.mark.host, pytest.mark.skipif(browser.available() is not None, reason=str(browser.available()))]


@pytest.mark.parametrize("name", sorted(DISTRIBUTED))
def test_a_distributed_template_opens_on_a_master_with_comfyui_distributed(name, cluster):
    with browser.open_ui(cluster.master.url) as page:
        page.evaluate(HELPERS)
        page.keyboard.press("Escape")  # a new user's first page opens the Templates browser
        assert_template_opens(page, name, vue=False)
        assert page.errors == [], page.errors
