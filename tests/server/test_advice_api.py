"""GET /api/runs/{id}/advice and the `alexnet_plateau_epochs` gauge over real run stores
written as the trainer writes them; `parent_id`/`forked_at_step` in GET /api/runs."""

from __future__ import annotations

from server_helpers import make_run

from trainer import runstore

SPE = 100


def validations(store, rid, errors, first_epoch=1):
    for i, err in enumerate(errors):
        epoch = first_epoch + i
        store.log_metrics(rid, epoch * SPE, float(epoch), {runstore.VAL_TOP1: err})
    store.flush()


def gauge(c, name):
    for line in c.get("/metrics").text.splitlines():
        if line.startswith(f'alexnet_plateau_epochs{{run="{name}"}} '):
            return float(line.split()[-1])
    raise AssertionError(f"no alexnet_plateau_epochs for {name}")


def test_advice_follows_the_rule_and_the_gauge_follows_the_advice(live):
    rid = make_run(live.store, "flat")
    validations(live.store, rid, [0.60, 0.50, 0.50, 0.4995])  # the last beats 0.50 by less than 0.001
    with live.client() as c:
        a = c.get(f"/api/runs/{rid}/advice").json()
        assert (a["flat_epochs"], a["best"], a["best_epoch"], a["due"]) == (2, 0.50, 2.0, False)
        assert (a["patience"], a["threshold"], a["policy"]) == (3, 0.001, "manual") and a["policy_acts"] is None
        assert gauge(c, "flat") == 2
        validations(live.store, rid, [0.51], first_epoch=5)
        a = c.get("/api/runs/flat/advice").json()  # by name
        assert a["due"] and a["flat_epochs"] == 3 and gauge(c, "flat") == 3
        assert a["suggestion"] == "top-1 error flat for 3 epochs (best 50.0 % at epoch 2): divide the learning rate by 10?"
        # An operator's division (at the start of epoch 6) starts the count again.
        live.store.log_event(rid, 5 * SPE, "lr_change", {"old_lr": 0.01, "new_lr": 0.001}, flush=True)
        a = c.get(f"/api/runs/{rid}/advice").json()
        assert (a["due"], a["flat_epochs"], a["last_division_step"], a["suggestion"]) == (False, 0, 500, None)
        assert gauge(c, "flat") == 0
        validations(live.store, rid, [0.45], first_epoch=6)  # improved
        a = c.get(f"/api/runs/{rid}/advice").json()
        assert (a["due"], a["best"], a["flat_epochs"]) == (False, 0.45, 0)
        assert c.get("/api/runs/999/advice").status_code == 404


def test_a_plateau_policy_says_when_it_acts_and_a_finished_run_is_not_advised(live):
    rid = make_run(live.store, "auto", steps=4 * SPE, spe=SPE)
    with live.store._conn() as conn:  # the trainer stores its whole config; these are the rule's keys
        conn.execute("UPDATE runs SET config = json_set(config, '$.lr_policy', 'plateau', '$.patience', 2,"
                     " '$.plateau_threshold', 0.0) WHERE id = ?", (rid,))
    validations(live.store, rid, [0.5, 0.5, 0.5, 0.5])
    with live.client() as c:
        a = c.get(f"/api/runs/{rid}/advice").json()
        assert (a["patience"], a["threshold"], a["flat_epochs"]) == (2, 0.0, 3)
        assert "plateau policy divides the LR itself" in a["policy_acts"]
        done = make_run(live.store, "done", status="finished")
        validations(live.store, done, [0.5, 0.5, 0.5, 0.5, 0.5])
        a = c.get(f"/api/runs/{done}/advice").json()
        assert a["flat_epochs"] == 4 and not a["due"] and a["suggestion"] is None


def test_run_list_names_parents(live):
    parent = make_run(live.store, "parent")
    fork = make_run(live.store, "fork")
    live.store.record_fork(fork, parent, 1200)
    with live.client() as c:
        runs = {r["name"]: r for r in c.get("/api/runs").json()}
    assert (runs["fork"]["parent_id"], runs["fork"]["forked_at_step"]) == (parent, 1200)
    assert (runs["parent"]["parent_id"], runs["parent"]["forked_at_step"]) == (None, None)
