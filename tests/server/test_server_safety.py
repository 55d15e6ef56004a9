"""Operator safety of POST /api/runs/{id}/lr/divide against a real uvicorn and SQLite file:
concurrency, idempotency, authentication, refusals with reasons, hostile ids, body limits."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from server_helpers import TOKEN, auth, make_run


def divide(c: httpx.Client, run, *, key=None, token=TOKEN, **body):
    headers = {**auth(token)} if token else {}
    if key:
        headers["Idempotency-Key"] = key
    return c.post(f"/api/runs/{run}/lr/divide", json={"reason": "plateau", **body}, headers=headers)


def kinds(live, rid):
    return [e["kind"] for e in live.store.events(rid)]


class Applier(threading.Thread):
    """Stands in for the trainer's poll: applies each pending division at the next step. As the
    trainer does, it marks a command applied and sets runs.lr in one transaction, and reports
    progress (runs.lr again) later."""

    def __init__(self, store, rid, lr):
        super().__init__(daemon=True)
        self.store, self.rid, self.lr, self.step, self.done = store, rid, lr, 0, threading.Event()

    def run(self):
        while not self.done.is_set() or self.store.pending_commands(self.rid):
            for cmd in self.store.pending_commands(self.rid):
                self.lr /= cmd.factor
                self.store.mark_command(cmd.id, "applied", step=self.step, lr=self.lr)
                self.store.update_progress(self.rid, epoch=0.0, step=self.step, lr=self.lr)
            self.step += 1
            time.sleep(0.005)


def test_fifty_concurrent_divides_none_lost_or_doubled(live):
    rid = make_run(live.store, lr=0.01)
    applier = Applier(live.store, rid, 0.01)
    applier.start()
    # factor 1.5: about 28 divisions fit above min_lr 1e-7, so some are accepted and some refused.
    with live.client() as c, ThreadPoolExecutor(50) as pool:
        answers = list(pool.map(lambda i: divide(c, rid, key=f"k{i}", factor=1.5, reason=f"r{i}"), range(50)))
    applier.done.set()
    applier.join(30)
    assert {r.status_code for r in answers} <= {202, 409}, [r.text for r in answers if r.status_code not in (202, 409)]
    commands = live.store.commands(rid)
    assert len(commands) == 50 and len({c.id for c in commands}) == 50
    assert sorted(c.idempotency_key for c in commands) == sorted(f"k{i}" for i in range(50))
    by_id = {c.id: c for c in commands}
    for r in answers:
        cmd = r.json() if r.status_code == 202 else r.json()["command"]
        assert by_id[cmd["id"]].reason == cmd["reason"]
        if r.status_code == 409:
            assert "minimum" in r.json()["detail"]
    applied = [c for c in commands if c.state == "applied"]
    rejected = [c for c in commands if c.state == "rejected"]
    assert len(applied) + len(rejected) == 50 and len(applied) == sum(r.status_code == 202 for r in answers)
    assert all(c.detail for c in rejected) and all(c.applied_step is not None for c in applied)
    assert 0 < len(applied) < 50
    assert applier.lr >= 1e-7 * (1 - 1e-9) and applier.lr < 1e-7 * 1.5
    k = kinds(live, rid)
    assert k.count("command_requested") == len(applied) and k.count("command_applied") == len(applied)
    assert k.count("command_rejected") == len(rejected)


def test_same_key_gives_one_command(live):
    rid = make_run(live.store)
    with live.client() as c:
        first, again = divide(c, rid, key="once"), divide(c, rid, key="once")
        assert first.status_code == again.status_code == 202
        assert first.json()["id"] == again.json()["id"] and again.headers["idempotent-replayed"] == "true"
        with ThreadPoolExecutor(10) as pool:
            racing = list(pool.map(lambda _: divide(c, rid, key="race"), range(10)))
        assert len({r.json()["id"] for r in racing}) == 1
        other = divide(c, rid, key="once", factor=100)
        assert other.status_code == 409 and "different body" in other.json()["detail"]
    assert len(live.store.commands(rid)) == 2
    assert kinds(live, rid).count("command_requested") == 2


@pytest.mark.parametrize("header", [None, "Bearer wrong-token-0123456789abcdef", f"Basic {TOKEN}",
                                    f"Bearer {TOKEN[:-1]}", "Bearer", f"Bearer {TOKEN}x"])
def test_no_or_wrong_token_is_401_and_records_no_command(live, header):
    rid = make_run(live.store)
    with live.client() as c:
        r = c.post(f"/api/runs/{rid}/lr/divide", json={"reason": "x"},
                   headers={"Authorization": header} if header else {})
    assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
    assert live.store.commands(rid) == []
    refused = live.store.events(rid, kinds=["request_refused"])
    assert len(refused) == 1 and "bearer token" in refused[0]["payload"]["reason"]


@pytest.mark.parametrize("body", [{"factor": 1}, {"factor": 0}, {"factor": -10}, {"factor": 1000.01},
                                  {"factor": 1e308}, {"factor": "ten"}, {"factor": None}, {"reason": ""},
                                  {"reason": "x" * 501}, {"extra": 1}])
def test_invalid_body_is_422_recorded_as_refused(live, body):
    rid = make_run(live.store)
    with live.client() as c:
        r = c.post(f"/api/runs/{rid}/lr/divide", json={"reason": "plateau", **body}, headers=auth())
    assert r.status_code == 422
    assert live.store.commands(rid) == []
    assert [e["payload"]["status"] for e in live.store.events(rid, kinds=["request_refused"])] == [422]


def test_refusals_409_and_404_apply_nothing(live):
    finished = make_run(live.store, "done", status="finished")
    low = make_run(live.store, "low", lr=5e-7)
    edge = make_run(live.store, "edge", lr=1.0)
    with live.client() as c:
        r = divide(c, finished)
        assert r.status_code == 409 and "finished" in r.json()["detail"]
        r = divide(c, low)
        assert r.status_code == 409 and "minimum" in r.json()["detail"]
        assert divide(c, edge, factor=1000).status_code == 202
        assert divide(c, "no-such-run").status_code == 404
        assert divide(c, 999).status_code == 404
    for rid in (finished, low):
        [cmd] = live.store.commands(rid)
        assert cmd.state == "rejected" and cmd.applied_step is None and cmd.detail
        assert kinds(live, rid)[-1] == "command_rejected"
    assert live.store.get_run(low)["lr"] == 5e-7


HOSTILE = ["../../etc/passwd", "..%2F..%2Fetc%2Fpasswd", "1 OR 1=1", "1; DROP TABLE runs; --", "' OR ''='",
           "current'--", "%00", "1%00", "99999999999999999999999999", "-1", "0x1", "１", "run-a\\..\\x",
           "%252e%252e%252f", "CURRENT", "*", "%", "_"]


@pytest.mark.parametrize("run_id", HOSTILE)
def test_path_or_sql_like_run_ids_are_404(live, run_id):
    make_run(live.store)
    with live.client() as c:
        for r in (c.get(f"/api/runs/{run_id}"), c.get(f"/api/runs/{run_id}/metrics/train_loss"),
                  c.get(f"/api/runs/{run_id}/events"), c.get(f"/api/runs/{run_id}/filters.png"),
                  divide(c, run_id)):
            assert r.status_code == 404, (r.request.url, r.status_code, r.text)
        assert [r["name"] for r in c.get("/api/runs").json()] == ["run-a"]
    assert live.store.commands(1) == []


def test_body_size_limit(live):
    rid = make_run(live.store)
    big = b'{"reason": "' + b"x" * 20000 + b'"}'
    with live.client() as c:
        r = c.post(f"/api/runs/{rid}/lr/divide", content=big, headers={**auth(), "Content-Type": "application/json"})
        assert r.status_code == 413
        chunked = c.post(f"/api/runs/{rid}/lr/divide", content=iter([big[:10000], big[10000:]]),
                         headers={**auth(), "Content-Type": "application/json"})
        assert chunked.status_code == 413
    assert live.store.commands(rid) == []


def test_no_cors_by_default(live):
    rid = make_run(live.store)
    with live.client() as c:
        pre = c.options(f"/api/runs/{rid}/lr/divide", headers={
            "Origin": "https://evil.example", "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization,content-type"})
        get = c.get("/api/runs", headers={"Origin": "https://evil.example"})
    for r in (pre, get):
        assert not any(h.startswith("access-control-") for h in r.headers), r.headers
