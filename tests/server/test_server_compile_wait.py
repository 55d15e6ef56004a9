"""A trainer's first compiled step, as the REST API and the page show it: "compiling, 40 s"
counted from the start time in the progress record (trainer.run.compiled), then how long
it took; a run that is not running shows no wait."""

from __future__ import annotations

import time

import pytest
from page_helpers import CHROMIUM, CHROMIUM_ARGS
from server_helpers import make_run

from trainer import runstore


def _compiling_since(store, rid: int, since: float | None, compile_s: float | None = None) -> None:
    store.update_progress(rid, epoch=0.0, step=0, lr=0.01, progress=runstore.RunProgress(
        epochs=90, steps_per_epoch=100, compiling_since=since, compile_s=compile_s))


def test_the_api_counts_the_compile_wait_and_then_gives_its_length(live):
    rid = make_run(live.store, "compiling")
    _compiling_since(live.store, rid, time.time() - 40)
    with live.client() as c:
        run = c.get(f"/api/runs/{rid}").json()
        assert 40 <= run["compiling_s"] < 60 and run["compile_s"] is None
        _compiling_since(live.store, rid, None, 41.5)
        run = c.get(f"/api/runs/{rid}").json()
        assert run["compiling_s"] is None and run["compile_s"] == 41.5
        stopped = make_run(live.store, "stopped mid-compile", status="stopped")
        _compiling_since(live.store, stopped, time.time() - 40)
        assert c.get(f"/api/runs/{stopped}").json()["compiling_s"] is None


@pytest.mark.browser
@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not on PATH (.ci/run installs it)")
def test_the_page_says_compiling_with_the_seconds_instead_of_a_still_throughput(live):
    from playwright.sync_api import sync_playwright

    rid = make_run(live.store, "compiling")
    _compiling_since(live.store, rid, time.time() - 40)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.goto(f"{live.url}/#run={rid}")
            page.wait_for_selector("body[data-loaded=true]", timeout=30_000)
            text = page.locator("#stat-ips .value").inner_text()
            assert text.startswith("compiling, ") and 40 <= int(text.split(", ")[1].split(" ")[0]) < 60, text
            assert "torch.compile" in page.locator("#stat-ips .sub").inner_text()
            _compiling_since(live.store, rid, None, 41.5)  # compiled: the tile shows images/s again
            page.wait_for_function("() => !document.querySelector('#stat-ips .value').textContent"
                                   ".startsWith('compiling')", timeout=30_000)
        finally:
            browser.close()
