"""The progress page in headless Chromium beside a real CPU training run.

One small `trainer train` (a quarter-width net on the demo shards), one server and one
browser serve the whole module. The page must draw its panels with data; the "Divide LR by
10" button, with its pre-filled reason and the token, must lead to the command applied by
that trainer; the events name checkpoints relative to the run; the conv1 panel shows a
placeholder until there is a picture; the comparison overlays two runs from a link; and
the layout holds at 1280x720 and at phone width. Runs other than the trainer's are written
into the same run store by the test, standing in for finished runs. Screenshots go to
test-artifacts/ (git-ignored)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
from page_helpers import (CHROMIUM, CHROMIUM_ARGS, POINTS, colour_pixels, hex_rgb, horizontal_grid_lines,
                          layout)
from server_helpers import TOKEN, make_run, serving

from trainer import runstore

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
LOSS = hex_rgb("#73bf69")
COMPARE_COLOURS = [hex_rgb("#ff9830"), hex_rgb("#5794f2")]  # compare.js PALETTE: first and second ticked
DEFAULT_REASON = "validation error stopped improving"  # divide.js DEFAULT_REASON

pytestmark = [pytest.mark.slow, pytest.mark.browser,
              pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not on PATH (.ci/run installs it)")]


class Site:
    def __init__(self, live, browser, trainer: subprocess.Popen, tmp: Path):
        self.live, self.browser, self.trainer, self.tmp = live, browser, trainer, tmp
        self.store = live.store

    def wait_for(self, predicate, timeout_s: float, what: str):
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            value = predicate()
            if value:
                return value
            assert self.trainer.poll() is None, f"trainer exited: {(self.tmp / 'trainer.log').read_text()[-3000:]}"
            time.sleep(0.5)
        raise TimeoutError(f"{what} within {timeout_s} s; trainer log: {(self.tmp / 'trainer.log').read_text()[-2000:]}")

    def trainer_run(self) -> dict:
        return self.wait_for(lambda: (r := self.store.get_run_by_name("demo")) and r["step"] >= 2 and r, 240, "first steps")

    def open(self, fragment: str = "", viewport=(1400, 1000)):
        """A fresh tab (its own sessionStorage) on the page; its script errors are collected."""
        page = self.browser.new_page(viewport={"width": viewport[0], "height": viewport[1]})
        page.errors = []
        page.on("pageerror", lambda e: page.errors.append(str(e)))
        page.goto(f"{self.live.url}/{fragment}")
        page.wait_for_selector("body[data-loaded=true]", timeout=30_000)
        return page


@pytest.fixture(scope="module")
def site(demo_shards, tmp_path_factory):
    from playwright.sync_api import sync_playwright

    tmp = tmp_path_factory.mktemp("page")
    log = open(tmp / "trainer.log", "w")
    trainer = subprocess.Popen(
        [sys.executable, "-m", "trainer", "train", "--data", str(demo_shards), "--run-dir", str(tmp / "runs" / "demo"),
         "--runs-db", str(tmp / "runs.db"), "--epochs", "100", "--batch-size", "16", "--width", "0.25",
         "--device", "cpu", "--backend", "reference", "--num-workers", "1", "--log-every", "1", "--demo"],
        stdout=log, stderr=subprocess.STDOUT)
    try:
        with serving(tmp / "runs.db") as live, sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                yield Site(live, browser, trainer, tmp)
            finally:
                browser.close()
    finally:
        trainer.terminate()
        trainer.wait(60)
        log.close()


def test_conv1_panel_shows_a_placeholder_until_the_first_checkpoint(site):
    fresh = make_run(site.store, "no-checkpoint-yet", steps=20, status="finished", run_dir=str(site.tmp / "runs" / "x"))
    page = site.open(f"#run={fresh}")
    assert page.locator("#filters-none").is_visible()
    assert page.locator("#filters-none").inner_text().startswith("No checkpoint yet")
    assert not page.locator("#filters-img").is_visible(), "an image without a picture shows a broken-image icon"
    run = site.trainer_run()
    site.wait_for(lambda: site.store.events(run["id"], kinds=["checkpoint"]), 240, "first checkpoint")
    page.select_option("#run-select", str(run["id"]))
    page.wait_for_function("() => { const i = document.getElementById('filters-img');"
                           " return !i.hidden && i.complete && i.naturalWidth > 0; }", timeout=30_000)
    assert not page.locator("#filters-none").is_visible()
    assert page.errors == []


def test_panels_fill_and_the_lr_division_is_applied(site):
    run = site.trainer_run()
    page = site.open()
    assert page.locator("#demo-badge").is_visible()
    for chart in ("chart-loss", "chart-lr", "chart-ips"):
        page.wait_for_function(POINTS, arg=[chart, 2], timeout=60_000)
    assert colour_pixels(page, "chart-loss", LOSS) > 20
    # The validation panel fills at the end of the first epoch, without a reload.
    site.wait_for(lambda: site.store.last_metric(run["id"], runstore.VAL_TOP1), 240, "first validation")
    page.wait_for_function(POINTS, arg=["chart-val", 1], timeout=30_000)
    assert page.locator("#stat-top1 .value").inner_text().endswith("%")

    page.click("#divide-button")
    assert page.locator("#divide-current").inner_text() == "1.00e−2"
    assert page.locator("#divide-new").inner_text() == "1.00e−3"
    reason = page.locator("#divide-reason")
    assert reason.input_value() == DEFAULT_REASON and reason.is_editable()
    page.fill("#divide-token", TOKEN)
    page.click("#divide-confirm")  # the pre-filled reason, as it is
    status = page.locator("#command-status[data-state=applied]")
    status.wait_for(timeout=90_000)
    step = int(status.get_attribute("data-step"))
    assert f"applied at step {step}" in status.inner_text()
    [cmd] = site.store.commands(run["id"])
    assert (cmd.state, cmd.applied_step, cmd.reason) == ("applied", step, DEFAULT_REASON)
    assert "command_applied" in [e["kind"] for e in site.store.events(run["id"])]
    page.wait_for_function("() => document.querySelector('#stat-lr .value').textContent === '1.00e−3'",
                           timeout=30_000)
    # The LR now spans 1e-3..1e-2: a grid line per decade of the axis (1e-4..1e-1), not one
    # at every 2..9 multiple (28 lines over those three decades).
    page.wait_for_timeout(500)
    assert 2 <= horizontal_grid_lines(page, "chart-lr") <= 5

    page.click("#divide-button")  # the token is kept for the tab: not asked again
    assert page.locator("#token-row").is_hidden()
    page.fill("#divide-reason", "an operator's own words")  # editable, and kept if cancelled
    page.click("#divide-cancel")
    page.click("#divide-button")
    assert page.locator("#divide-reason").input_value() == "an operator's own words"
    page.click("#divide-cancel")
    assert page.errors == []


def test_events_name_checkpoints_relative_to_the_run(site):
    run = site.trainer_run()
    site.wait_for(lambda: site.store.events(run["id"], kinds=["checkpoint"]), 240, "first checkpoint")
    page = site.open(f"#run={run['id']}")
    row = page.locator("#events tbody tr[data-kind=checkpoint]").first
    row.wait_for(timeout=30_000)
    detail = row.locator("td.detail").inner_text()
    assert "path=checkpoints/epoch-" in detail and "last=checkpoints/last.pt" in detail, detail
    assert str(site.tmp) not in page.locator("#events").inner_text()
    assert page.errors == []


def test_comparison_overlays_two_runs_from_a_link(site):
    run = site.trainer_run()
    site.wait_for(lambda: site.store.last_metric(run["id"], runstore.VAL_TOP1), 240, "first validation")
    rid, _ = site.store.start_run("ablation-no-lrn", {"epochs": 5, "lr": 0.01}, lr=0.01)
    for epoch in range(1, 6):
        site.store.log_metrics(rid, epoch * 8, float(epoch), {runstore.VAL_TOP1: 0.95 - 0.05 * epoch,
                                                             runstore.VAL_TOP5: 0.8 - 0.05 * epoch})
    site.store.flush()
    site.store.set_status(rid, "finished")

    page = site.open(f"#run={run['id']}&compare={rid},{run['id']}")
    page.wait_for_function("() => document.getElementById('chart-compare').dataset.series === '2'", timeout=30_000)
    page.wait_for_function(POINTS, arg=["chart-compare", 2], timeout=30_000)
    for r in (rid, run["id"]):
        assert page.locator(f"#compare-runs input[value='{r}']").is_checked()
    for colour in COMPARE_COLOURS:  # both lines drawn, in the colours of the first and second ticked run
        assert colour_pixels(page, "chart-compare", colour, tol=12) > 10, colour
    assert page.locator("#compare-note").is_hidden()

    page.uncheck(f"#compare-runs input[value='{rid}']")
    assert page.evaluate("() => location.hash") == f"#run={run['id']}&compare={run['id']}"
    page.wait_for_function("() => document.getElementById('chart-compare').dataset.series === '1'", timeout=10_000)
    assert page.locator("#compare-note").is_visible()
    page.check(f"#compare-runs input[value='{rid}']")
    page.select_option("#compare-metric", "val_top5_error")
    link = page.url
    assert link.endswith(f"#run={run['id']}&compare={run['id']},{rid}&metric=val_top5_error")

    again = site.open(link[len(site.live.url) + 1:])  # the link, in a new tab
    again.wait_for_function("() => document.getElementById('chart-compare').dataset.series === '2'", timeout=30_000)
    assert again.locator("#compare-metric").input_value() == "val_top5_error"
    assert again.locator(f"#compare-runs input[value='{rid}']").is_checked()
    assert page.errors == [] and again.errors == []


def test_layout_at_1280x720_and_at_phone_width(site):
    run = site.trainer_run()
    ARTIFACTS.mkdir(exist_ok=True)
    page = site.open(f"#run={run['id']}&compare={run['id']}", viewport=(1280, 720))
    page.wait_for_function(POINTS, arg=["chart-loss", 2], timeout=30_000)
    page.screenshot(path=str(ARTIFACTS / "dashboard-1280x720.png"))
    page.screenshot(path=str(ARTIFACTS / "dashboard-1280-full.png"), full_page=True)
    wide = layout(page)
    assert wide["scrollWidth"] <= 1280, "the page scrolls sideways at 1280 px"
    assert wide["clippedStats"] == [], f"stat values cut off: {wide['clippedStats']}"
    assert wide["statsBottom"] <= 720 and wide["topbarHeight"] <= 60, wide  # the stats row is in the first screen
    assert len(wide["panelLefts"]) == 2, f"expected two columns of panels at 1280 px: {wide}"

    page.set_viewport_size({"width": 390, "height": 844})
    page.wait_for_timeout(500)  # the charts' ResizeObservers redraw
    page.screenshot(path=str(ARTIFACTS / "dashboard-phone.png"), full_page=True)
    phone = layout(page)
    assert phone["scrollWidth"] <= 391, "the page scrolls sideways on a phone"
    assert phone["clippedStats"] == [], f"stat values cut off: {phone['clippedStats']}"
    assert len(phone["panelLefts"]) == 1, f"panels side by side on a phone: {phone}"
    assert all(w >= phone["mainWidth"] - 30 for w in phone["panelWidths"]), phone  # each the full width
    assert len(phone["compareLefts"]) == 1, "the comparison's run list and chart side by side on a phone"
    assert page.errors == []
