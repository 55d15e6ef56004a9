"""`trainer serve`'s own flags, on the real command as an operator starts it:
--cors-origin (CORS headers for that origin only; none without the flag), --min-lr (a
division under it is 409), --max-body-bytes (a larger body is 413); and what
`GET /api/runs/{id}/commands` then lists."""

from __future__ import annotations

import httpx
import pytest

from tests.deploy.serve import serving
from trainer.runstore import RunStore

TOKEN = "serve-flags-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
UI, OTHER = "http://ui.example", "http://other.example"


def _running_run(db) -> int:
    store = RunStore(db)
    rid, _ = store.start_run("r", {"run_dir": "", "epochs": 90}, lr=0.01)
    store.close()
    return rid


def _divide(base: str, rid: int, reason: str = "flat", key: str | None = None) -> httpx.Response:
    headers = {**AUTH, **({"Idempotency-Key": key} if key else {})}
    return httpx.post(f"{base}/api/runs/{rid}/lr/divide", json={"factor": 10, "reason": reason}, headers=headers,
                      timeout=10)


def _cors(base: str, rid: int, origin: str) -> tuple[httpx.Response, httpx.Response]:
    get = httpx.get(f"{base}/api/runs", headers={"Origin": origin}, timeout=10)
    preflight = httpx.options(f"{base}/api/runs/{rid}/lr/divide", timeout=10, headers={
        "Origin": origin, "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization,content-type"})
    return get, preflight


@pytest.fixture
def flagged(tmp_path):
    db = tmp_path / "runs.db"
    rid = _running_run(db)
    with serving(db, TOKEN, ("--cors-origin", UI, "--min-lr", "1e-3", "--max-body-bytes", "300")) as base:
        yield base, rid, db


def test_cors_origin_flag_allows_that_origin_only(flagged):
    base, rid, _ = flagged
    get, preflight = _cors(base, rid, UI)
    assert get.status_code == 200 and get.headers["access-control-allow-origin"] == UI
    assert preflight.status_code == 200 and preflight.headers["access-control-allow-origin"] == UI
    assert "POST" in preflight.headers["access-control-allow-methods"]
    assert "authorization" in preflight.headers["access-control-allow-headers"].lower()
    get, preflight = _cors(base, rid, OTHER)
    assert "access-control-allow-origin" not in get.headers
    assert "access-control-allow-origin" not in preflight.headers


def test_min_lr_and_max_body_flags_and_the_commands_list(flagged):
    base, rid, db = flagged
    first = _divide(base, rid, key="k1")
    assert first.status_code == 202  # 0.01 -> 0.001, the minimum itself
    second = _divide(base, rid)
    assert second.status_code == 409 and "minimum 0.001" in second.json()["detail"]
    big = _divide(base, rid, reason="x" * 400)  # a valid request, but over 300 bytes
    assert big.status_code == 413
    store = RunStore(db)  # the trainer applies the first command at step 7
    store.mark_command(first.json()["id"], "applied", step=7)
    store.close()

    listed = httpx.get(f"{base}/api/runs/{rid}/commands", timeout=10).json()
    assert [(c["id"], c["state"], c["applied_step"]) for c in listed] == [
        (first.json()["id"], "applied", 7), (second.json()["command"]["id"], "rejected", None)]
    a, r = listed
    assert (a["kind"], a["factor"], a["reason"], a["idempotency_key"], a["run_id"]) == ("lr_divide", 10.0, "flat",
                                                                                     "k1", rid)
    assert a["who"] and a["applied_at"] >= a["requested_at"] > 0
    assert "minimum 0.001" in r["detail"] and r["idempotency_key"] is None
    assert httpx.get(f"{base}/api/runs/999/commands", timeout=10).status_code == 404


def test_without_the_flags_no_cors_and_the_defaults_apply(tmp_path):
    db = tmp_path / "runs.db"
    rid = _running_run(db)
    with serving(db, TOKEN) as base:
        for origin in (UI, OTHER):
            get, preflight = _cors(base, rid, origin)
            assert "access-control-allow-origin" not in get.headers
            assert "access-control-allow-origin" not in preflight.headers
        # 0.01 / 10 / 10 is above the default minimum 1e-7; 400 bytes are under 16 KiB.
        assert [_divide(base, rid).status_code, _divide(base, rid, reason="x" * 400).status_code] == [202, 202]
        assert len(httpx.get(f"{base}/api/runs/{rid}/commands", timeout=10).json()) == 2
