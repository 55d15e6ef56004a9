"""Issue 28, deliverable 3: a run's non-paper large-batch choices (`--lr-scaling linear
--warmup-epochs K`, `--grad-bf16`), recorded in its stored config, are shown beside it on
the page; a run with the paper's recipe shows nothing there."""

from __future__ import annotations

import pytest
from page_helpers import CHROMIUM, CHROMIUM_ARGS
from server_helpers import serving

pytestmark = [pytest.mark.browser,
              pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not on PATH (.ci/run installs it)")]


def test_the_page_says_a_run_scaled_its_lr_and_a_paper_run_says_nothing(tmp_path):
    from playwright.sync_api import sync_playwright

    with serving(tmp_path / "runs.db") as live, sync_playwright() as p:
        store = live.store
        scaled, _ = store.start_run("scaled", {"run_dir": "", "epochs": 90, "lr": 0.01, "batch_size": 1024,
                                               "lr_scaling": "linear", "warmup_epochs": 5, "grad_bf16": True},
                                    lr=0.08)
        paper, _ = store.start_run("paper", {"run_dir": "", "epochs": 90, "lr": 0.01, "batch_size": 128,
                                             "lr_scaling": "none", "warmup_epochs": 0, "grad_bf16": False},
                                   lr=0.01)
        store.flush()
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.goto(f"{live.url}/#run={scaled}")
            page.wait_for_selector("#recipe-badge:not([hidden])", timeout=30_000)
            scaled_text = page.locator("#recipe-badge").inner_text()
            page.goto(f"{live.url}/#run={paper}")
            page.reload()
            page.wait_for_selector("body[data-loaded=true]", timeout=30_000)
            page.wait_for_function("() => document.title.startsWith('paper')", timeout=30_000)
            paper_hidden = page.locator("#recipe-badge").is_hidden()
        finally:
            browser.close()
    assert scaled_text.startswith("not the paper's: LR 8.00e−2 = 1.00e−2 × 1024/128, warm-up 5 epochs"), scaled_text
    assert "gradients all-reduced in bf16" in scaled_text, scaled_text
    assert paper_hidden
