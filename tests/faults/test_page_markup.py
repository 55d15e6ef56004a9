"""Issue 26, row 1: every string the page shows from the run store stays text.

Markup goes into a run name (the run list, the comparison's list and its chart tooltip,
the divide dialog), an operator's reason (a command's event), an event payload and a class
name (an event's detail); the page is opened in Chromium with the CSP switched off
(`bypass_csp`), so that only the page's own code stands between the markup and the DOM.
No element may be created from it and no handler may run, and the markup must be on the
page as text (the test reached the place that shows it)."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "server"))
from page_helpers import CHROMIUM, CHROMIUM_ARGS, POINTS  # noqa: E402
from server_helpers import make_run, serving  # noqa: E402

pytestmark = [pytest.mark.browser,
              pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not on PATH (.ci/run installs it)")]


def markup(tag: str) -> str:
    """An element that, if ever parsed as HTML, is found by its class and counts itself."""
    return f'<img class="injected" src="x" onerror="window.__injected=(window.__injected||0)+1" alt="{tag}">'


STATIC = Path(__file__).resolve().parents[2] / "trainer" / "server" / "static"
HTML_SINKS = re.compile(r"\.innerHTML|\.outerHTML|insertAdjacentHTML|document\.write|createContextualFragment")

INJECTED = "() => ({elements: document.querySelectorAll('.injected').length, ran: window.__injected || 0})"


def test_no_page_script_parses_html():
    """The one rule the page keeps: text goes in as text (textContent, DOM nodes); no script
    of ours hands a string to an HTML parser."""
    scripts = sorted((STATIC / "js").glob("*.js")) + [STATIC / "index.html"]
    found = [f"{p.name}:{n}" for p in scripts for n, line in enumerate(p.read_text().splitlines(), 1)
             if HTML_SINKS.search(line)]
    assert len(scripts) > 2 and found == [], found


def test_store_strings_never_become_elements(tmp_path):
    from playwright.sync_api import sync_playwright

    with serving(tmp_path / "runs.db") as live, sync_playwright() as p:
        store = live.store
        first = make_run(store, markup("run-name-1"), steps=200, every=10)
        second = make_run(store, markup("run-name-2"), steps=200, every=10)
        store.submit_lr_divide(second, 10.0, reason=markup("reason"), who="operator@test")
        store.log_event(second, 150, "data_damaged", {"class_name": markup("class-name"), "key": markup("key")})
        store.log_event(second, 160, markup("event-kind"), {"note": markup("payload")}, flush=True)

        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_context(bypass_csp=True, viewport={"width": 1400, "height": 1000}).new_page()
            page.goto(f"{live.url}/#run={second}&compare={first},{second}")
            page.wait_for_selector("body[data-loaded=true]", timeout=30_000)
            page.wait_for_function(POINTS, arg=["chart-compare", 2], timeout=30_000)
            page.wait_for_function(POINTS, arg=["chart-loss", 2], timeout=30_000)
            tooltips = []
            for chart in ("chart-compare", "chart-loss"):
                box = page.locator(f"#{chart} .u-over").bounding_box()
                page.mouse.move(box["x"] + box["width"] * 0.5, box["y"] + box["height"] * 0.5)
                page.wait_for_selector(f"#{chart} .tooltip", state="visible", timeout=10_000)
                tooltips.append(page.locator(f"#{chart} .tooltip").text_content())
            page.click("#divide-button")
            dialog = page.locator("#divide-run").text_content()
            page.wait_for_timeout(500)  # an image's onerror fires asynchronously
            found = page.evaluate(INJECTED)
            events = page.locator("#events").text_content()
            runs = page.locator("#compare-runs").text_content()
        finally:
            browser.close()

    assert found == {"elements": 0, "ran": 0}, found
    # Each string is on the page as the text it is.
    assert markup("run-name-1") in tooltips[0] and markup("run-name-2") in tooltips[0], tooltips[0]
    assert markup("run-name-2") in dialog
    assert markup("run-name-1") in runs and markup("run-name-2") in runs
    for tag in ("reason", "class-name", "key", "event-kind", "payload"):
        assert markup(tag) in events, (tag, events)
