"""The progress record has one definition (runstore.RunProgress): what the trainer's
reporter writes is what the REST API and /metrics read, field by field."""

from __future__ import annotations

import dataclasses
import json
import sqlite3

from trainer.run.progress import Meter, StoreReporter
from trainer.runstore import RunProgress, RunStore
from trainer.server.prometheus import exposition
from trainer.server.summary import run_brief, run_detail


def test_what_the_reporter_writes_the_api_and_metrics_read(tmp_path):
    store = RunStore(tmp_path / "runs.db")
    rid, _ = store.start_run("r", {"run_dir": str(tmp_path / "r"), "epochs": 90}, lr=0.01)
    fixed = RunProgress(epochs=3, steps_per_epoch=10, batch_size=16, world_size=1, demo=True, max_steps=0)
    meter = Meter(16)
    meter.images_per_sec, meter.data_wait_frac = 123.5, 0.25
    StoreReporter(store, rid, fixed=fixed).progress(7, 0.7, lr=0.01, meter=meter, eta_s=42.0, images_seen=112,
                                                   force=True)
    # The stored JSON: every field of the record under its own name, nothing else.
    stored = json.loads(sqlite3.connect(tmp_path / "runs.db").execute(
        "SELECT progress FROM runs WHERE id = ?", (rid,)).fetchone()[0])
    assert set(stored) == {f.name for f in dataclasses.fields(RunProgress)}
    run = store.get_run(rid)
    detail = run_detail(store, run)
    assert (detail.epochs, detail.steps_per_epoch, detail.images_per_sec, detail.data_wait_frac, detail.eta_s,
            detail.images_seen) == (3, 10, 123.5, 0.25, 42.0, 112)
    assert run_brief(run).demo is True and detail.progress["batch_size"] == 16
    text = exposition(store)
    for line in ('alexnet_train_images_per_second{run="r"} 123.5', 'alexnet_data_wait_ratio{run="r"} 0.25',
                 'alexnet_images_processed_total{run="r"} 112.0'):
        assert line in text


def test_a_row_of_an_older_store_reads_with_its_missing_fields_as_none():
    old = {"epochs": 90, "images_per_sec": 10.0, "a_field_this_code_does_not_know": 1}
    record = RunProgress.from_json(old)
    assert record.epochs == 90 and record.images_per_sec == 10.0 and record.eta_s is None and record.demo is False
