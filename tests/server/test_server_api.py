"""The read side of the REST API, /metrics, the page and /docs, against a real uvicorn."""

from __future__ import annotations

import re
import subprocess
import sys

from server_helpers import make_run

from trainer import runstore


def test_runs_list_detail_and_current(live, tmp_path):
    (tmp_path / "rd").mkdir()
    (tmp_path / "rd" / "filters.png").write_bytes(b"\x89PNG\r\n\x1a\nfake")
    old = make_run(live.store, "old", steps=300, status="finished")
    rid = make_run(live.store, "new", steps=250, run_dir=str(tmp_path / "rd"))
    with live.client() as c:
        runs = c.get("/api/runs").json()
        assert [r["name"] for r in runs] == ["new", "old"]
        run = c.get("/api/runs/current").json()
        assert run["id"] == rid and run["status"] == "running" and run["demo"] is True
        assert run["epochs"] == 90 and run["step"] == 250 and run["lr"] == 0.01
        assert run["best_val_top1_error"] == 0.9 - 200e-5 and run["last_val_top5_error"] == 0.7 - 200e-5
        assert run["eta_s"] == 3600.0 and run["images_per_sec"] == 500.0
        assert c.get("/api/runs/new").json()["id"] == rid
        assert c.get(f"/api/runs/{old}").json()["status"] == "finished"
        png = c.get(run["filters_url"])
        assert png.status_code == 200 and png.headers["content-type"] == "image/png"
        assert png.content.startswith(b"\x89PNG")
        assert c.get(f"/api/runs/{old}/filters.png").status_code == 404


def test_series_downsampled_and_since_step(live):
    rid = make_run(live.store, steps=5000)
    with live.client() as c:
        full = c.get(f"/api/runs/{rid}/metrics/{runstore.LOSS}").json()
        assert len(full["steps"]) == 1000 and full["steps"][0] == 1 and full["steps"][-1] == 5000
        assert full["steps"] == sorted(set(full["steps"]))
        small = c.get(f"/api/runs/{rid}/metrics/{runstore.LOSS}", params={"max_points": 10}).json()
        assert len(small["steps"]) == 10 and small["steps"][-1] == 5000
        tail = c.get(f"/api/runs/{rid}/metrics/{runstore.LOSS}", params={"since_step": 4990}).json()
        assert tail["steps"] == list(range(4990, 5001))
        assert tail["values"][-1] == 7.0 - 5000e-4
        assert c.get(f"/api/runs/{rid}/metrics/no_such_metric").json()["steps"] == []
        # A cached answer is not served once the series has a new row.
        live.store.log_metrics(rid, 5001, 50.01, {runstore.LOSS: 1.5})
        live.store.flush()
        again = c.get(f"/api/runs/{rid}/metrics/{runstore.LOSS}", params={"since_step": 4990}).json()
        assert again["steps"][-1] == 5001 and again["values"][-1] == 1.5
        assert runstore.VAL_TOP1 in c.get(f"/api/runs/{rid}/metrics").json()
        assert c.get(f"/api/runs/{rid}/metrics/{runstore.LOSS}", params={"max_points": 0}).status_code == 422


def test_events_filtered_and_incremental(live):
    rid = make_run(live.store)
    live.store.log_event(rid, 10, "checkpoint", {"epoch": 1})
    live.store.log_event(rid, 20, "lr_change", {"old_lr": 0.01, "new_lr": 0.001}, flush=True)
    with live.client() as c:
        events = c.get(f"/api/runs/{rid}/events").json()
        assert [e["kind"] for e in events] == ["checkpoint", "lr_change"]
        only = c.get(f"/api/runs/{rid}/events", params={"kind": "lr_change"}).json()
        assert [e["payload"]["new_lr"] for e in only] == [0.001]
        assert c.get(f"/api/runs/{rid}/events", params={"since_id": events[0]["id"]}).json() == events[1:]


def test_non_finite_values_are_null_not_500(live):
    rid = make_run(live.store, steps=3)
    live.store.log_metrics(rid, 4, 0.04, {runstore.LOSS: float("nan")})
    live.store.flush()
    live.store.update_progress(rid, epoch=0.04, step=4, lr=0.01,
                               progress=runstore.RunProgress(eta_s=float("inf"), images_per_sec=float("nan")))
    with live.client() as c:
        assert c.get(f"/api/runs/{rid}/metrics/{runstore.LOSS}").json()["values"][-1] is None
        run = c.get(f"/api/runs/{rid}")
        assert run.status_code == 200 and run.json()["eta_s"] is None and run.json()["progress"]["eta_s"] is None
        assert c.get("/metrics").status_code == 200


PROM_LINE = re.compile(r'^([a-z0-9_]+)(?:\{run="((?:[^"\\]|\\.)*)"(?:,status="([a-z]+)")?\})? (\S+)$')
EXPECTED = ["alexnet_train_loss", "alexnet_learning_rate", "alexnet_val_top1_error_ratio",
            "alexnet_val_top5_error_ratio", "alexnet_train_images_per_second", "alexnet_data_wait_ratio",
            "alexnet_epoch", "alexnet_step", "alexnet_images_processed_total", "alexnet_plateau_epochs"]


def test_prometheus_exposition(live):
    make_run(live.store, "a", steps=200)
    make_run(live.store, 'we"ird\\name', steps=100, status="failed")
    with live.client() as c:
        r = c.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain; version=0.0.4")
    samples, types = {}, {}
    for line in r.text.splitlines():
        if line.startswith("# TYPE"):
            _, _, name, kind = line.split()
            types[name] = kind
        elif not line.startswith("#"):
            m = PROM_LINE.match(line)
            assert m, line
            samples[(m[1], m[2], m[3])] = float(m[4])
    assert types == {**{n: "gauge" for n in EXPECTED}, "alexnet_images_processed_total": "counter",
                     "alexnet_run_info": "gauge", "alexnet_auth_failures_total": "counter"}
    assert samples[("alexnet_auth_failures_total", None, None)] == 0
    assert samples[("alexnet_run_info", "a", "running")] == 1
    assert samples[("alexnet_run_info", 'we\\"ird\\\\name', "failed")] == 1
    assert samples[("alexnet_step", "a", None)] == 200
    assert samples[("alexnet_learning_rate", "a", None)] == 0.01
    assert samples[("alexnet_images_processed_total", "a", None)] == 200 * 128
    assert samples[("alexnet_val_top1_error_ratio", "a", None)] == 0.9 - 200e-5
    assert {n for n, run, _ in samples if run == "a"} == set(EXPECTED) | {"alexnet_run_info"}


def test_page_docs_and_headers_are_served_offline(live):
    with live.client() as c:
        page = c.get("/")
        assert page.status_code == 200 and "Divide LR by 10" in page.text
        assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
        assert page.headers["x-frame-options"] == "DENY"
        # Every script and stylesheet of the page and of /docs comes from this server.
        docs = c.get("/docs").text
        refs = re.findall(r'(?:src|href)="([^"]+)"', page.text + docs)
        assert refs and all(u.startswith("/") and not u.startswith("//") for u in refs), refs
        for u in refs:
            assert c.get(u).status_code == 200, u
        for js in ("dashboard.js", "charts.js", "divide.js", "format.js"):
            assert c.get(f"/static/js/{js}").status_code == 200
        assert c.get("/openapi.json").json()["paths"]["/api/runs/{run_id}/lr/divide"]["post"]
        assert c.get("/healthz").json() == {"status": "ok"}


def test_server_never_imports_torch(tmp_path):
    code = ("import sys; from trainer.server.app import create_app; from trainer.server.cli import run;"
            "from trainer.server.settings import ServerSettings;"
            f"create_app(ServerSettings(runs_db={str(tmp_path / 'r.db')!r}, token='t' * 20));"
            "assert 'torch' not in sys.modules, 'the server imported torch'")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
