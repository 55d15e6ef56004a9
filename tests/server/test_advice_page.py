"""The plateau banner and the run tree in headless Chromium, over a real uvicorn and a
real run store that the test writes as the trainer would: the banner appears when the
top-1 error is flat for the patience, names the rule on hover and opens the division
dialog, and goes once a division is applied or the error improves; a fork is listed
under its parent and overlays it from the fork point by step and by epoch, and the URL
keeps the selection."""

from __future__ import annotations

import pytest
from page_helpers import CHROMIUM, CHROMIUM_ARGS, POINTS, colour_pixels, hex_rgb
from server_helpers import make_run, serving

from trainer import runstore

SPE = 100
COMPARE_COLOURS = [hex_rgb("#ff9830"), hex_rgb("#5794f2")]  # compare.js PALETTE: first and second ticked
pytestmark = [pytest.mark.slow, pytest.mark.browser,
              pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not on PATH (.ci/run installs it)")]


def validations(store, rid, errors, first_epoch=1):
    for i, err in enumerate(errors):
        epoch = first_epoch + i
        store.log_metrics(rid, epoch * SPE, float(epoch), {runstore.VAL_TOP1: err, runstore.VAL_TOP5: err / 2})
    store.flush()


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


def open_page(browser, live, fragment):
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.errors = []
    page.on("pageerror", lambda e: page.errors.append(str(e)))
    page.goto(f"{live.url}/{fragment}")
    page.wait_for_selector("body[data-loaded=true]", timeout=30_000)
    return page


def test_banner_appears_and_goes_with_a_division_or_an_improvement(browser, tmp_path):
    with serving(tmp_path / "runs.db", refresh_s=0.3) as live:
        rid = make_run(live.store, "flat-<b>run</b>")  # no rows of its own: the test writes the validations
        validations(live.store, rid, [0.60, 0.412, 0.415, 0.413])  # flat for 2 validations: no banner yet
        page = open_page(browser, live, f"#run={rid}")
        page.wait_for_function("() => document.getElementById('advice').dataset.flat === '2'", timeout=10_000)
        assert page.locator("#advice").is_hidden()

        validations(live.store, rid, [0.42], first_epoch=5)
        page.wait_for_selector("#advice", state="visible", timeout=10_000)
        assert page.locator("#advice-text").text_content() == \
            "top-1 error flat for 3 epochs (best 41.2 % at epoch 2): divide the learning rate by 10?"
        title = page.locator("#advice").get_attribute("title")
        assert "0.1 percentage points for 3 validations" in title and "policy manual" in title
        page.click("#advice-divide")  # the page's own division dialog
        assert page.locator("#divide-dialog").is_visible()
        assert "flat-<b>run</b>" in page.locator("#divide-run").text_content()
        page.click("#divide-cancel")

        # The trainer applies a division (as trainer.run.commands logs it): the banner goes.
        live.store.log_event(rid, 5 * SPE, "lr_change", {"old_lr": 0.01, "new_lr": 0.001}, flush=True)
        page.wait_for_selector("#advice", state="hidden", timeout=10_000)

        # Flat again for the patience at the new LR, then an improvement: it comes and goes.
        validations(live.store, rid, [0.42, 0.42, 0.42], first_epoch=6)
        page.wait_for_selector("#advice", state="visible", timeout=10_000)
        validations(live.store, rid, [0.30], first_epoch=9)
        page.wait_for_selector("#advice", state="hidden", timeout=10_000)
        assert page.errors == []


def test_forks_are_a_tree_and_overlay_their_parent(browser, tmp_path):
    with serving(tmp_path / "runs.db", refresh_s=0.3) as live:
        parent = make_run(live.store, "parent", steps=6 * SPE, spe=SPE)
        other = make_run(live.store, "other", steps=2 * SPE, spe=SPE)
        fork = live.store.start_run("parent-lr", {"run_dir": "", "epochs": 90, "lr": 0.001}, lr=0.001)[0]
        live.store.record_fork(fork, parent, 3 * SPE)
        # The fork's rows continue the parent's step and epoch count from the fork point.
        validations(live.store, fork, [0.80, 0.70, 0.60], first_epoch=4)
        page = open_page(browser, live, f"#run={parent}&compare={parent},{fork}&x=step")

        options = page.locator("#run-select option").all_text_contents()
        names = [o.split(" (#")[0].replace("\u00a0", " ").strip() for o in options]
        assert names == ["other", "parent", "└ parent-lr"], options
        labels = page.locator("#compare-runs label")
        depths = [labels.nth(i).get_attribute("data-depth") for i in range(labels.count())]
        assert depths == ["0", "0", "1"]
        assert "forked at step 300" in labels.nth(2).text_content()

        page.wait_for_function("() => document.getElementById('chart-compare').dataset.series === '2'", timeout=30_000)
        page.wait_for_function(POINTS, arg=["chart-compare", 3], timeout=30_000)
        assert page.locator("#compare-x").input_value() == "step"
        for colour in COMPARE_COLOURS:
            assert colour_pixels(page, "chart-compare", colour, tol=12) > 10, colour

        page.select_option("#compare-x", "epoch")
        assert page.evaluate("() => location.hash") == f"#run={parent}&compare={parent},{fork}"
        page.check(f"#compare-runs input[value='{other}']")
        page.select_option("#compare-x", "step")
        link = page.evaluate("() => location.href")
        assert link.endswith(f"#run={parent}&compare={parent},{fork},{other}&x=step")
        again = open_page(browser, live, link[len(live.url) + 1:])
        again.wait_for_function("() => document.getElementById('chart-compare').dataset.series === '3'",
                                timeout=30_000)
        assert again.locator("#compare-x").input_value() == "step"
        assert page.errors == [] and again.errors == []
