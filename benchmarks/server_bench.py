"""Control-server benchmark: `python benchmarks/server_bench.py [--rows 1000000] [--seconds 15]`.

A run store with 1,000,000 metric rows, a real `trainer serve` process, and
1. the latency (p50/p95) of the page's metrics call (one series downsampled to 1000
   points) for 20 concurrent clients asking back to back, in three cases:
   - idle: nothing writes the run store, so every answer after the first comes from the
     server's cache (the figure this benchmark used to report alone);
   - writer: a process appends to the series as a trainer does (`--writer-interval`: a
     row of the six interval metrics every 0.4 s, which is log_every 20 at the H100's 51
     steps/s; progress and a command poll each second; the run store's 1 s flushes), so
     the cached answer goes stale every second;
   - writer, cache bypassed: the same, and each call asks from another `since_step`
     (unique per call, under 20,000 of the 200,000 steps), so no call is a cache hit.
   Timing starts once every client thread is running, and only calls that start while
   the writer runs are kept;
2. a training-like loop (a CPU matmul step that logs metrics, progress and polls commands
   through the run store as the trainer does) timed alone, with 20 clients polling like
   the page (one series call each per second), alone again, and with the 20 clients
   asking back to back: the same loop in the same run.
Prints a table, then one JSON line (docs/design.md, "Benchmarks").
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import socket
import sqlite3
import itertools
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

NAMES = ["train_loss", "lr", "images_per_sec", "data_wait_frac", "images_seen"]
SERIES_CALL = "/api/runs/{rid}/metrics/train_loss?max_points=1000"


def fill_store(db: Path, rows: int) -> int:
    from trainer.runstore import RunProgress, RunStore

    store = RunStore(db, flush_interval=1e9)
    rid, _ = store.start_run("bench", {"run_dir": "", "epochs": 90}, lr=0.01)
    steps = rows // len(NAMES)
    for step in range(1, steps + 1):
        store.log_metrics(rid, step, step / 10_000, {n: 1.0 / step for n in NAMES})
        if step % 50_000 == 0:
            store.flush()
    store.flush()
    store.update_progress(rid, epoch=steps / 10_000, step=steps, lr=0.01, progress=RunProgress(epochs=90))
    store.close()
    return rid


def clients_main(url: str, n: int, seconds: float, period: float, bypass: bool) -> None:
    """Child process: n client threads for `seconds` from the moment all of them run;
    prints {"start", "calls": [[start time, latency ms], ...]} (time.monotonic, which is
    one clock for all processes on Linux)."""
    import httpx

    calls, ready = [], threading.Barrier(n + 1)
    since = itertools.count()  # unique since_step per call: never a cache hit
    window = {}

    def client():
        with httpx.Client(base_url=url, timeout=30) as c:
            ready.wait()
            while time.monotonic() < window["stop"]:
                path = SERIES_CALL.format(rid=1)
                if bypass:
                    path += f"&since_step={next(since) % 20_000}"
                t0, t = time.monotonic(), time.perf_counter()
                r = c.get(path)
                calls.append((t0, (time.perf_counter() - t) * 1000))
                assert r.status_code == 200 and 0 < len(r.json()["steps"]) <= 1000
                if period:
                    time.sleep(max(0.0, period - (time.perf_counter() - t)))

    threads = [threading.Thread(target=client) for _ in range(n)]
    for t in threads:
        t.start()
    window["start"] = time.monotonic()
    window["stop"] = window["start"] + seconds
    ready.wait()  # every client thread is running: the clock starts now
    for t in threads:
        t.join()
    print(json.dumps({"start": window["start"], "calls": calls}))


def start_clients(url: str, n: int, seconds: float, period: float, bypass: bool = False) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, __file__, "--clients-of", url, "--n", str(n), "--seconds", str(seconds),
                             "--period", str(period), *(["--bypass"] if bypass else [])],
                            stdout=subprocess.PIPE, text=True)


def writer_main(db: str, rid: int, seconds: float, interval: float) -> None:
    """Child process: append to the run store as the trainer's rank 0 does for `seconds`;
    prints {"t0", "t1", "rows"}."""
    from trainer.runstore import RunProgress, RunStore

    store = RunStore(db)  # the trainer's flush interval: 1 s
    step = store.get_run(rid)["step"]
    t0 = time.monotonic()
    last_poll, rows = 0.0, 0
    while time.monotonic() - t0 < seconds:
        step += 20
        store.log_metrics(rid, step, step / 10_000, {n: 1.0 / step for n in NAMES + ["epoch"]})
        rows += len(NAMES) + 1
        if time.monotonic() - last_poll >= 1.0:
            last_poll = time.monotonic()
            store.pending_commands(rid)
            store.update_progress(rid, epoch=step / 10_000, step=step, lr=0.01, progress=RunProgress(epochs=90))
        time.sleep(interval)
    store.flush()
    store.close()
    print(json.dumps({"t0": t0, "t1": time.monotonic(), "rows": rows}))


def with_writer(url: str, db: Path, rid: int, args, bypass: bool) -> tuple[list[float], int]:
    """Latencies (ms) of the calls that started while the writer ran, and its rows."""
    writer = subprocess.Popen([sys.executable, __file__, "--writer-of", str(db), "--rid", str(rid),
                               "--seconds", str(args.seconds + 4), "--interval", str(args.writer_interval)],
                              stdout=subprocess.PIPE, text=True)
    time.sleep(2.0)  # the writer is importing and running before the clients start
    clients = start_clients(url, args.clients, args.seconds, 0.0, bypass)
    out = json.loads(clients.communicate()[0])
    w = json.loads(writer.communicate()[0])
    assert writer.returncode == 0 and clients.returncode == 0
    kept = [ms for t, ms in out["calls"] if max(out["start"], w["t0"]) <= t <= w["t1"]]
    return kept, w["rows"]


def client_latencies(proc: subprocess.Popen) -> list[float]:
    out = json.loads(proc.communicate()[0])
    return [ms for _, ms in out["calls"]]


@contextlib.contextmanager
def serving(db: Path):
    """A real `trainer serve` child on a free loopback port (access log off: a pipe nobody
    reads would fill and stall it)."""
    import httpx

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "trainer", "serve", "--runs-db", str(db), "--port", str(port),
                             "--log-level", "warning"], env={**os.environ, "ALEXNET_TOKEN": "bench-token-0123456789abcdef"},
                            stdout=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):
            try:
                httpx.get(url + "/healthz", timeout=2)
                break
            except httpx.TransportError:
                time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        proc.wait(30)


def training_loop(db: Path, rid: int, seconds: float) -> tuple[list[float], list[float]]:
    """Step times (ms) of a trainer-shaped loop, and the part of each spent in the run store
    (which tells SQLite contention from CPU contention on a small machine)."""
    import torch

    from trainer.runstore import RunProgress, RunStore

    store = RunStore(db)
    x = torch.randn(384, 384)
    times, store_times, last_poll = [], [], 0.0
    step = store.get_run(rid)["step"]
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        t = time.perf_counter()
        for _ in range(8):
            x = torch.tanh(x @ x / 384)
        step += 1
        s = time.perf_counter()
        store.log_metrics(rid, step, step / 10_000, {"train_loss": float(x[0, 0]), "lr": 0.01})
        if time.monotonic() - last_poll >= 1.0:
            last_poll = time.monotonic()
            store.pending_commands(rid)
            store.update_progress(rid, epoch=step / 10_000, step=step, lr=0.01, progress=RunProgress(epochs=90))
        end_step = time.perf_counter()
        times.append((end_step - t) * 1000)
        store_times.append((end_step - s) * 1000)
    store.close()
    return times, store_times


def pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[q - 1] if len(values) > 1 else values[0]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--seconds", type=float, default=15.0)
    ap.add_argument("--clients", type=int, default=20)
    ap.add_argument("--writer-interval", type=float, default=0.4,
                    help="seconds between the writer's metric rows (0.4: log_every 20 at 51 steps/s)")
    ap.add_argument("--clients-of"), ap.add_argument("--n", type=int), ap.add_argument("--period", type=float)
    ap.add_argument("--bypass", action="store_true")
    ap.add_argument("--writer-of"), ap.add_argument("--rid", type=int), ap.add_argument("--interval", type=float)
    args = ap.parse_args()
    if args.clients_of:
        clients_main(args.clients_of, args.n, args.seconds, args.period, args.bypass)
        return 0
    if args.writer_of:
        sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
        writer_main(args.writer_of, args.rid, args.seconds, args.interval)
        return 0
    import torch

    torch.set_num_threads(1)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "runs.db"
        t0 = time.perf_counter()
        rid = fill_store(db, args.rows)
        fill_s = time.perf_counter() - t0
        with serving(db) as url:
            latencies = client_latencies(start_clients(url, args.clients, args.seconds, 0.0))
            writer_lat, writer_rows = with_writer(url, db, rid, args, bypass=False)
            bypass_lat, bypass_rows = with_writer(url, db, rid, args, bypass=True)
            alone1 = training_loop(db, rid, args.seconds)
            page = start_clients(url, args.clients, args.seconds + 2, 1.0)
            with_page = training_loop(db, rid, args.seconds)
            page_lat = client_latencies(page)
            alone2 = training_loop(db, rid, args.seconds)
            hammer = start_clients(url, args.clients, args.seconds + 2, 0.0)
            with_hammer = training_loop(db, rid, args.seconds)
            hammer.communicate()
    (alone1, store1), (alone2, store2) = alone1, alone2
    (with_page, store_page), (with_hammer, store_hammer) = with_page, with_hammer
    alone = statistics.mean(alone1 + alone2)
    figures = {
        "metric_rows": args.rows, "fill_s": round(fill_s, 1), "clients": args.clients,
        "idle_call_p50_ms": round(pct(latencies, 50), 1), "idle_call_p95_ms": round(pct(latencies, 95), 1),
        "idle_calls": len(latencies),
        "writer_call_p50_ms": round(pct(writer_lat, 50), 1), "writer_call_p95_ms": round(pct(writer_lat, 95), 1),
        "writer_calls": len(writer_lat), "writer_rows": writer_rows,
        "writer_bypass_call_p50_ms": round(pct(bypass_lat, 50), 1),
        "writer_bypass_call_p95_ms": round(pct(bypass_lat, 95), 1),
        "writer_bypass_calls": len(bypass_lat), "writer_bypass_rows": bypass_rows,
        "page_like_call_p95_ms": round(pct(page_lat, 95), 1),
        "step_ms_alone": round(alone, 3), "step_ms_alone_first": round(statistics.mean(alone1), 3),
        "step_ms_alone_second": round(statistics.mean(alone2), 3),
        "step_ms_with_page_clients": round(statistics.mean(with_page), 3),
        "step_ms_with_hammering_clients": round(statistics.mean(with_hammer), 3),
        "store_ms_per_step_alone": round(statistics.mean(store1 + store2), 3),
        "store_ms_per_step_with_page_clients": round(statistics.mean(store_page), 3),
        "store_ms_per_step_with_hammering_clients": round(statistics.mean(store_hammer), 3),
    }
    ratios = {  # trainer speed with clients over alone: higher is better, 1.0 = no slowdown
        "trainer_speed_with_page_clients_over_alone": round(alone / statistics.mean(with_page), 4),
        "trainer_speed_with_hammering_clients_over_alone": round(alone / statistics.mean(with_hammer), 4),
    }
    print(f"{'figure':<48}{'value':>14}")
    for k, v in {**figures, **ratios}.items():
        print(f"{k:<48}{v:>14}")
    machine = {"platform": platform.platform(), "python": platform.python_version(), "cpus": os.cpu_count(),
               "sqlite": sqlite3.sqlite_version, "torch_threads": torch.get_num_threads()}
    print(json.dumps({"bench": "server", "machine": machine, "figures": figures, "ratios": ratios}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
