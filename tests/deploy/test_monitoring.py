"""The monitoring half of docker-compose.yml: Prometheus's configuration is valid and
scrapes the control server, and every metric the Grafana dashboard queries is one that a
live `trainer serve` really exports for a run in a real run store."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import urllib.request

import pytest
import yaml

from tests.deploy.compose import REPO
from tests.deploy.serve import serving
from trainer import runstore

PROMETHEUS_YML = REPO / "docker/prometheus/prometheus.yml"
DASHBOARD = REPO / "docker/grafana/dashboards/alexnet.json"
DATASOURCES = REPO / "docker/grafana/provisioning/datasources/prometheus.yml"


def dashboard_queries() -> list[str]:
    dash = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]
    exprs += [v["definition"] for v in dash["templating"]["list"] if v["type"] == "query"]
    return exprs


def queried_metric_names() -> set[str]:
    return {m for e in dashboard_queries() for m in re.findall(r"\balexnet_[a-z0-9_]+", e)}


def test_promtool_accepts_the_config():
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("Debian's prometheus (promtool) is not installed (.ci/run installs it: apt-get install prometheus)")
    out = subprocess.run([promtool, "check", "config", str(PROMETHEUS_YML)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr


def test_prometheus_scrapes_the_control_server():
    jobs = yaml.safe_load(PROMETHEUS_YML.read_text())["scrape_configs"]
    targets = [(j.get("metrics_path", "/metrics"), t) for j in jobs for sc in j["static_configs"] for t in sc["targets"]]
    assert ("/metrics", "control:8000") in targets


def test_dashboard_uses_the_provisioned_datasource():
    uids = {d["uid"] for d in yaml.safe_load(DATASOURCES.read_text())["datasources"]}
    dash = json.loads(DASHBOARD.read_text())
    used = {t["datasource"]["uid"] for p in dash["panels"] for t in p["targets"]} | {p["datasource"]["uid"] for p in dash["panels"]}
    assert used <= uids
    assert all(e for e in dashboard_queries()), "a panel without a query"


def _store_with_a_run(path):
    store = runstore.RunStore(path)
    run_id, _ = store.start_run("deploy-check", {"demo": True, "epochs": 2})
    for step in (10, 20):
        store.log_metrics(run_id, step, step / 20, {
            runstore.LOSS: 6.5, runstore.LR: 0.01, runstore.VAL_TOP1: 0.9, runstore.VAL_TOP5: 0.6,
            runstore.IMAGES_PER_SEC: 100.0, runstore.DATA_WAIT: 0.1, runstore.EPOCH: step / 20,
            runstore.IMAGES_SEEN: step * 128,
        })
    # What the trainer keeps in the run's progress (throughput, data wait, images seen).
    store.update_progress(run_id, epoch=1.0, step=20, lr=0.01, progress=runstore.RunProgress(
        images_per_sec=100.0, data_wait_frac=0.1, images_seen=2560, demo=True))
    store.close()


def exported_names(text: str) -> set[str]:
    names = set()
    for line in text.splitlines():
        if line and not line.startswith("#"):
            names.add(re.match(r"[a-zA-Z_:][a-zA-Z0-9_:]*", line).group(0))
    return names


def test_every_dashboard_metric_is_served(tmp_path):
    queried = queried_metric_names()
    assert len(queried) >= 8, queried  # the parser found the panels' metrics
    db = tmp_path / "runs.db"
    _store_with_a_run(db)
    with serving(db) as base:
        with urllib.request.urlopen(base + "/metrics", timeout=10) as resp:
            text = resp.read().decode()
    served = exported_names(text)
    # Prometheus adds no suffix to these names: what the dashboard queries must be a served sample.
    assert queried <= served, f"queried but not served: {sorted(queried - served)}"
