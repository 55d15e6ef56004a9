"""The progress page in headless Chromium beside a real CPU training run.

A small `trainer train` (a quarter-width net on the demo shards) writes the run store; the
page must draw its panels with data, and the "Divide LR by 10" button with the token must
lead to the command applied by that trainer at a step the page shows. Screenshots go to
test-artifacts/ (git-ignored)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from server_helpers import TOKEN, serving

from trainer import runstore

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
CHROMIUM = shutil.which("chromium")
LOSS_RGB = (115, 191, 105)  # the loss line's colour (#73bf69)
# Functions, not expressions: the page's CSP forbids eval, which Playwright uses for strings.
POINTS = "([id, n]) => Number(document.getElementById(id).dataset.points) >= n"

pytestmark = [pytest.mark.slow, pytest.mark.browser,
              pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not on PATH (.ci/run installs it)")]


def start_trainer(shards: Path, tmp: Path) -> subprocess.Popen:
    log = open(tmp / "trainer.log", "w")
    return subprocess.Popen(
        [sys.executable, "-m", "trainer", "train", "--data", str(shards), "--run-dir", str(tmp / "runs" / "demo"),
         "--runs-db", str(tmp / "runs.db"), "--epochs", "100", "--batch-size", "16", "--width", "0.25",
         "--device", "cpu", "--backend", "reference", "--num-workers", "1", "--log-every", "1", "--demo"],
        stdout=log, stderr=subprocess.STDOUT)


def wait_for(predicate, timeout_s: float, what: str, proc: subprocess.Popen, tmp: Path):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        assert proc.poll() is None, f"trainer exited: {(tmp / 'trainer.log').read_text()[-3000:]}"
        time.sleep(0.5)
    raise TimeoutError(f"{what} within {timeout_s} s; trainer log: {(tmp / 'trainer.log').read_text()[-2000:]}")


def line_pixels(page, chart_id: str) -> int:
    """Pixels of the loss colour on the chart's canvas: the line was really drawn."""
    return page.evaluate("""([id, rgb]) => {
        const c = document.querySelector(`#${id} canvas`), d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        let n = 0;
        for (let i = 0; i < d.length; i += 4)
            if (Math.abs(d[i] - rgb[0]) < 30 && Math.abs(d[i + 1] - rgb[1]) < 30 && Math.abs(d[i + 2] - rgb[2]) < 30) n++;
        return n; }""", [chart_id, list(LOSS_RGB)])


def test_page_with_a_real_training_run(demo_shards, tmp_path):
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    db = tmp_path / "runs.db"
    trainer = start_trainer(demo_shards, tmp_path)
    try:
        with serving(db) as live, sync_playwright() as p:
            store = live.store
            run = wait_for(lambda: (r := store.current_run()) and r["step"] >= 2 and r, 240, "first steps", trainer, tmp_path)
            browser = p.chromium.launch(executable_path=CHROMIUM,
                                        args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"])
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            errors = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(live.url + "/")
            page.wait_for_selector("body[data-loaded=true]", timeout=30_000)
            assert page.locator("#demo-badge").is_visible()
            for chart in ("chart-loss", "chart-lr", "chart-ips"):
                page.wait_for_function(POINTS, arg=[chart, 2], timeout=60_000)
            assert line_pixels(page, "chart-loss") > 20
            # The validation panel fills at the end of the first epoch, without a reload.
            wait_for(lambda: store.last_metric(run["id"], runstore.VAL_TOP1), 240, "first validation", trainer, tmp_path)
            page.wait_for_function(POINTS, arg=["chart-val", 1], timeout=30_000)
            assert page.locator("#stat-top1 .value").inner_text().endswith("%")

            page.click("#divide-button")
            assert page.locator("#divide-current").inner_text() == "1.00e−2"
            assert page.locator("#divide-new").inner_text() == "1.00e−3"
            page.fill("#divide-reason", "browser test: loss plateau")
            page.fill("#divide-token", TOKEN)
            page.click("#divide-confirm")
            status = page.locator("#command-status[data-state=applied]")
            status.wait_for(timeout=90_000)
            step = int(status.get_attribute("data-step"))
            assert f"applied at step {step}" in status.inner_text()
            [cmd] = store.commands(run["id"])
            assert (cmd.state, cmd.applied_step, cmd.reason) == ("applied", step, "browser test: loss plateau")
            assert "command_applied" in [e["kind"] for e in store.events(run["id"])]
            page.wait_for_function("() => document.querySelector('#stat-lr .value').textContent === '1.00e−3'",
                                   timeout=30_000)

            page.click("#divide-button")  # the token is kept for the tab: not asked again
            assert page.locator("#token-row").is_hidden()
            page.click("#divide-cancel")
            page.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True)
            page.set_viewport_size({"width": 390, "height": 844})
            page.wait_for_timeout(500)
            assert page.evaluate("document.documentElement.scrollWidth") <= 391, "the page scrolls sideways on a phone"
            page.screenshot(path=str(ARTIFACTS / "dashboard-phone.png"), full_page=True)
            assert errors == []
            browser.close()
    finally:
        trainer.terminate()
        trainer.wait(60)
