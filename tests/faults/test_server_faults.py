"""Issue 13, the control server under hostile or broken conditions (rows 9, 11, 14, 15):
a real uvicorn on loopback over a real SQLite file (tests/server/server_helpers.py)."""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "server"))
from server_helpers import TOKEN, auth, make_run, serving  # noqa: E402

from trainer.runstore.runlock import LOCK_NAME, STALE_S  # noqa: E402
from trainer.runstore import RunStore  # noqa: E402

REPO = Path(__file__).resolve().parents[2]


def divide(c, rid, body: bytes | dict, headers=None):
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return c.post(f"/api/runs/{rid}/lr/divide", content=content,
                  headers={**auth(), "Content-Type": "application/json", **(headers or {})})


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
def test_non_finite_factor_is_422_with_a_reason(tmp_path, literal):
    """Row 9: Python's JSON reads NaN/Infinity; the answer was a 500 (the 422 handler could
    not encode the non-finite input)."""
    with serving(tmp_path / "runs.db") as live, live.client() as c:
        rid = make_run(live.store)
        r = divide(c, rid, f'{{"factor": {literal}, "reason": "x"}}'.encode())
        assert r.status_code == 422, r.text
        (error,) = r.json()["detail"]
        assert error["loc"] == ["body", "factor"] and "finite" in error["msg"]
        assert live.store.commands(rid) == []
        refused = [e for e in live.store.events(rid) if e["kind"] == "request_refused"]
        assert len(refused) == 1 and "finite" in refused[0]["payload"]["reason"]


def test_wrong_tokens_are_counted_and_their_events_rate_limited(tmp_path):
    """Row 14: 3,000 wrong tokens made 3,000 event rows. Now every attempt is counted in
    /metrics and the events get at most one row per client per second, with the count."""
    with serving(tmp_path / "runs.db") as live, live.client() as c:
        rid = make_run(live.store)
        t0 = time.monotonic()
        codes = [divide(c, rid, {"reason": "x"}, headers=auth("wrong-token-0123456789abcdef")).status_code
                 for _ in range(100)]
        elapsed = time.monotonic() - t0
        assert set(codes) == {401}
        refused = [e for e in live.store.events(rid) if e["kind"] == "request_refused"]
        assert 1 <= len(refused) <= elapsed + 2, (len(refused), elapsed)
        assert refused[0]["payload"]["attempts"] == 1
        assert sum(e["payload"]["attempts"] for e in refused) <= 100
        metrics = c.get("/metrics").text
        assert "alexnet_auth_failures_total 100" in metrics.splitlines()


@pytest.mark.parametrize("header", [f"Bearer  {TOKEN}".encode(), f"Bearer {TOKEN}\xa0".encode("latin-1"),
                                    f"Bearer {TOKEN}\x85".encode("latin-1")])
def test_token_is_compared_exactly(tmp_path, header):
    """Row 14: `given.strip()` accepted a doubled space or a trailing NBSP/NEL. (Spaces and tabs
    at the very end are not part of an HTTP header's value (RFC 9110, 5.5): h11 drops them
    before any application sees the header.)"""
    with serving(tmp_path / "runs.db") as live:
        rid = make_run(live.store)
        with socket.create_connection(("127.0.0.1", int(live.url.rsplit(":", 1)[1])), timeout=10) as s:
            body = b'{"reason": "x"}'
            s.sendall(b"POST /api/runs/%d/lr/divide HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                      b"Content-Length: %d\r\nConnection: close\r\nAuthorization: %s\r\n\r\n%s"
                      % (rid, len(body), header, body))
            answer = _read_all(s)
        assert answer.startswith(b"HTTP/1.1 401"), answer[:200]
        assert live.store.commands(rid) == []


def _read_all(s: socket.socket) -> bytes:
    out = b""
    while chunk := s.recv(65536):
        out += chunk
    return out


def test_run_store_files_are_private(tmp_path):
    """Row 14: runs.db, -wal and -shm were 0644 (the umask's default)."""
    old = os.umask(0o022)
    try:
        store = RunStore(tmp_path / "runs.db")
        make_run(store)
        files = [tmp_path / n for n in ("runs.db", "runs.db-wal", "runs.db-shm")]
        assert all(f.exists() for f in files)
        assert {f.name: stat.S_IMODE(f.stat().st_mode) for f in files} == {f.name: 0o600 for f in files}
        store.close()
    finally:
        os.umask(old)


def test_a_slow_client_is_closed_at_the_header_timeout(tmp_path):
    """Row 14: half a request line held a connection forever (uvicorn times out only idle
    keep-alive connections). Both a stalled and a trickling client are closed."""
    with serving(tmp_path / "runs.db", header_timeout_s=1.0) as live:
        port = int(live.url.rsplit(":", 1)[1])
        for trickle in (False, True):
            with socket.create_connection(("127.0.0.1", port), timeout=8) as s:
                t0 = time.monotonic()
                s.sendall(b"GET /heal")
                s.settimeout(0.3 if trickle else 8)
                closed = b"x"
                while time.monotonic() - t0 < 8:
                    try:
                        closed = s.recv(1024)
                    except TimeoutError:
                        s.sendall(b"t")  # one byte at a time, never the end of the line
                        continue
                    except ConnectionResetError:
                        closed = b""
                    break
                assert closed == b"" and time.monotonic() - t0 < 3, (trickle, time.monotonic() - t0)
        with live.client() as c:
            assert c.get("/healthz").status_code == 200  # the server itself is fine


def _damage_tail(db: Path, pages: int = 20) -> None:
    """Random bytes over the last pages (the metrics' B-tree); the runs table stays readable."""
    size = db.stat().st_size
    with open(db, "r+b") as f:
        f.seek(size - 4096 * pages)
        f.write(os.urandom(4096 * pages))


def _store_with_rows(db: Path) -> int:
    store = RunStore(db)
    rid = make_run(store, steps=3000)
    store.close()
    with sqlite3.connect(db) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return rid


def test_healthz_reports_a_damaged_store(tmp_path):
    """Row 11: /healthz said 200 (it read only the runs table) while metric calls gave 500."""
    db = tmp_path / "runs.db"
    rid = _store_with_rows(db)
    with serving(db, store_check_s=0) as live, live.client() as c:
        assert c.get("/healthz").json() == {"status": "ok"}
        _damage_tail(db)
        live.store.heartbeat(rid)  # a write through SQLite, as the trainer's, drops the readers' caches
        r = c.get("/healthz")
        assert r.status_code == 503 and r.json()["status"] == "unhealthy"
        assert str(db) in r.json()["detail"] and "malformed" in r.json()["detail"]
        assert c.get(f"/api/runs/{rid}/metrics/train_loss").status_code == 503


def test_serve_on_a_damaged_store_exits_corrupt_with_one_line(tmp_path):
    """Row 11: a traceback at start; now one line naming the file and the fix, status 4."""
    db = tmp_path / "runs.db"
    _store_with_rows(db)
    _damage_tail(db)
    env = dict(os.environ, ALEXNET_TOKEN=TOKEN, PYTHONPATH=str(REPO))
    r = subprocess.run([sys.executable, "-m", "trainer", "serve", "--runs-db", str(db), "--port", "0"],
                       capture_output=True, text=True, env=env, cwd=REPO, timeout=60)
    assert r.returncode == 4, (r.returncode, r.stderr[-2000:])
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and str(db) in lines[0] and ".recover" in lines[0], r.stderr


def test_a_run_whose_trainer_is_gone_is_interrupted_and_refuses_commands(tmp_path):
    """Row 15, both rules: a free lock in a run dir the server can see; an old heartbeat where
    it cannot. The row still says "running" in the store; readers say "interrupted"."""
    seen_dir = tmp_path / "seen"
    seen_dir.mkdir()
    holder = json.dumps({"pid": 12345, "host": "gpu-7", "since": 1.0})
    (seen_dir / LOCK_NAME).write_text(holder)
    with serving(tmp_path / "runs.db") as live, live.client() as c:
        local = make_run(live.store, "local", run_dir=str(seen_dir))
        remote = make_run(live.store, "remote", run_dir=str(tmp_path / "elsewhere"))
        fresh = make_run(live.store, "fresh", run_dir=str(tmp_path / "elsewhere2"))
        with sqlite3.connect(live.db) as conn:
            conn.execute("UPDATE runs SET heartbeat_at = ? WHERE id = ?", (time.time() - STALE_S - 5, remote))
            conn.execute("UPDATE runs SET holder = ? WHERE id = ?", (holder, local))
        statuses = {r["name"]: r["status"] for r in c.get("/api/runs").json()}
        assert statuses == {"local": "interrupted", "remote": "interrupted", "fresh": "running"}
        assert c.get("/api/runs/local").json()["status"] == "interrupted"
        assert 'alexnet_run_info{run="remote",status="interrupted"} 1' in c.get("/metrics").text
        r = divide(c, local, {"reason": "plateau"})
        assert r.status_code == 409 and "interrupted" in r.json()["detail"] and "12345" in r.json()["detail"]
        assert divide(c, remote, {"reason": "plateau"}).status_code == 409
        assert divide(c, fresh, {"reason": "plateau"}).status_code == 202
