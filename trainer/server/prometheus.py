"""The Prometheus exposition of every run (text format 0.0.4), documented in README.md.

Gauges carry the label `run` (the run's name); `alexnet_run_info{run,status}` is 1 for
each run so that Grafana can list runs and filter by status. Units follow Prometheus
conventions: error rates and the data-wait fraction are ratios in [0, 1].
"""

from __future__ import annotations

import math

from trainer import runstore
from trainer.runstore.runlock import observed_status
from trainer.runstore import RunProgress, RunStore

from .advice import plateau_epochs

# (name, type, help, how to read it from a run: a metric name, a `runs` column, or a field
# of the progress record, `RunProgress`)
METRICS = [
    ("alexnet_train_loss", "gauge", "Training cross-entropy loss at the last logged step.", ("metric", runstore.LOSS)),
    ("alexnet_learning_rate", "gauge", "Current learning rate of SGD.", ("run", "lr")),
    ("alexnet_val_top1_error_ratio", "gauge", "Top-1 validation error of the last evaluation (0-1).",
     ("metric", runstore.VAL_TOP1)),
    ("alexnet_val_top5_error_ratio", "gauge", "Top-5 validation error of the last evaluation (0-1).",
     ("metric", runstore.VAL_TOP5)),
    ("alexnet_train_images_per_second", "gauge", "Training throughput in images per second.",
     ("progress", "images_per_sec")),
    ("alexnet_data_wait_ratio", "gauge", "Fraction of step time spent waiting for input data (0-1).",
     ("progress", "data_wait_frac")),
    ("alexnet_epoch", "gauge", "Current epoch (fractional within an epoch).", ("run", "epoch")),
    ("alexnet_step", "gauge", "Optimizer steps taken so far.", ("run", "step")),
    ("alexnet_images_processed_total", "counter", "Training images processed since the run started.",
     ("progress", "images_seen")),
]


def escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _format(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


def _value(store: RunStore, run: dict, source: tuple[str, str]) -> float | None:
    kind, key = source
    if kind == "metric":
        row = store.last_metric(run["id"], key)
        value = None if row is None else row["value"]
    elif kind == "run":
        value = run.get(key)
    else:
        value = getattr(RunProgress.from_json(run["progress"]), key)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def exposition(store: RunStore, auth_failures: int = 0) -> str:
    runs = store.list_runs()
    lines = ["# HELP alexnet_run_info A run in the run store (value 1); labels name it and give its status"
             " (interrupted: its trainer is gone).",
             "# TYPE alexnet_run_info gauge"]
    for run in runs:
        status = observed_status(run)
        lines.append(f'alexnet_run_info{{run="{escape_label(run["name"])}",status="{escape_label(status)}"}} 1')
    for name, kind, help_, source in METRICS:
        lines += [f"# HELP {name} {help_}", f"# TYPE {name} {kind}"]
        for run in runs:
            value = _value(store, run, source)
            if value is not None:
                lines.append(f'{name}{{run="{escape_label(run["name"])}"}} {_format(value)}')
    lines += ["# HELP alexnet_plateau_epochs Validations since top-1 error last improved by more than the plateau"
              " threshold (or since the last LR division); the plateau rule advises a division at its patience.",
              "# TYPE alexnet_plateau_epochs gauge"]
    for run in runs:
        lines.append(f'alexnet_plateau_epochs{{run="{escape_label(run["name"])}"}} {plateau_epochs(store, run)}')
    lines += ["# HELP alexnet_auth_failures_total Operator requests refused for a missing or wrong token"
              " since the server started.",
              "# TYPE alexnet_auth_failures_total counter",
              f"alexnet_auth_failures_total {int(auth_failures)}"]
    return "\n".join(lines) + "\n"
