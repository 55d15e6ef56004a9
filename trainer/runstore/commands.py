"""Operator commands in the run store: the server records them, the trainer settles them.

Part of `trainer.runstore`, which owns all of the project's SQL.
"""

from __future__ import annotations

import json
import math
import sqlite3
import time
from dataclasses import dataclass

from trainer.runstore.schema import DEFAULT_MIN_LR, FLOOR_TOLERANCE
from trainer.runstore.transaction import transaction


def below_floor(lr: float, min_lr: float) -> bool:
    """The LR floor, for the store (a division it refuses) and the trainer (one it will not
    apply): `lr` under `min_lr` beyond rounding (1e-4 / 10 is at a 1e-5 floor, not under it)."""
    return lr < min_lr * (1 - FLOOR_TOLERANCE)


@dataclass
class Command:
    """An operator command, as stored in the `commands` table; the REST API's schema is
    derived from it (trainer/server/schemas.py)."""

    id: int
    run_id: int
    kind: str
    factor: float
    reason: str
    who: str
    idempotency_key: str | None
    requested_at: float
    state: str  # pending, applied (at applied_step) or rejected (detail says why)
    applied_step: int | None
    applied_at: float | None
    detail: str

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def _command(row: sqlite3.Row | None) -> Command | None:
    return None if row is None else Command(**{k: row[k] for k in row.keys()})


class CommandsMixin:
    """RunStore's command methods; they use its `_conn()`, `_writer()` and `flush()`."""

    def count_commands(self, run_id: int, state: str) -> int:
        return self._conn().execute(
            "SELECT COUNT(*) FROM commands WHERE run_id = ? AND state = ?", (run_id, state)).fetchone()[0]

    def submit_lr_divide(
        self, run_id: int, factor: float, *, reason: str = "", who: str = "",
        idempotency_key: str | None = None, min_lr: float = DEFAULT_MIN_LR, refuse: str = "",
    ) -> tuple[Command, bool]:
        """Record an operator's request to divide the LR, atomically with its checks.

        Returns (command, created); created is False when the idempotency key was seen
        before (the earlier command is returned). A request that would take the LR under
        `min_lr` (or under the trainer's own --min-lr, from the run's config), or that targets
        a run that is not running, or that the caller refuses (`refuse`: the reason, e.g. the
        run's trainer is gone), is recorded as `rejected` with the reason. Raises KeyError
        for an unknown run.

        The LR is checked after every pending division: `runs.lr` includes every applied
        command because `mark_command` sets it in the transaction that marks one applied,
        and this check reads both in one BEGIN IMMEDIATE transaction."""
        now = time.time()
        conn = self._writer()
        with transaction(conn):
            if idempotency_key is not None:
                row = conn.execute(
                    "SELECT * FROM commands WHERE run_id = ? AND idempotency_key = ?",
                    (run_id, idempotency_key)).fetchone()
                if row is not None:
                    return _command(row), False
            run = conn.execute("SELECT status, lr, step, config FROM runs WHERE id = ?", (run_id,)).fetchone()
            if run is None:
                raise KeyError(run_id)
            state, detail = "pending", ""
            trainer_min = json.loads(run["config"]).get("min_lr")
            if isinstance(trainer_min, (int, float)) and math.isfinite(trainer_min):
                min_lr = max(min_lr, float(trainer_min))
            if run["status"] != "running":
                state, detail = "rejected", f"run is {run['status']}, not running"
            elif refuse:
                state, detail = "rejected", refuse
            elif run["lr"] is not None:
                pending = conn.execute(
                    "SELECT factor FROM commands WHERE run_id = ? AND state = 'pending'", (run_id,)).fetchall()
                projected = run["lr"] / math.prod(r["factor"] for r in pending) / factor
                if below_floor(projected, min_lr):
                    state = "rejected"
                    detail = f"new learning rate {projected:.3g} would fall under the minimum {min_lr:.3g}"
            cur = conn.execute(
                "INSERT INTO commands (run_id, kind, factor, reason, who, idempotency_key, requested_at, state, detail)"
                " VALUES (?, 'lr_divide', ?, ?, ?, ?, ?, ?, ?)",
                (run_id, factor, reason, who, idempotency_key, now, state, detail))
            payload = {"command_id": cur.lastrowid, "factor": factor, "reason": reason, "who": who, "state": state}
            if detail:
                payload["detail"] = detail
            conn.execute(
                "INSERT INTO events (run_id, step, wall, kind, payload) VALUES (?, ?, ?, ?, ?)",
                (run_id, run["step"], now, "command_" + ("requested" if state == "pending" else "rejected"),
                 json.dumps(payload, sort_keys=True)))
            row = conn.execute("SELECT * FROM commands WHERE id = ?", (cur.lastrowid,)).fetchone()
            return _command(row), True

    def record_refused_request(self, run_id: int, reason: str, payload: dict | None = None) -> None:
        """An operator call refused before it became a command (bad token, bad factor...)."""
        self._writer().execute(
            "INSERT INTO events (run_id, step, wall, kind, payload) VALUES (?, NULL, ?, 'request_refused', ?)",
            (run_id, time.time(), json.dumps({"reason": reason, **(payload or {})}, sort_keys=True)))

    def get_command(self, command_id: int) -> Command | None:
        return _command(self._conn().execute("SELECT * FROM commands WHERE id = ?", (command_id,)).fetchone())

    def commands(self, run_id: int, state: str | None = None) -> list[Command]:
        sql, args = "SELECT * FROM commands WHERE run_id = ?", [run_id]
        if state is not None:
            sql += " AND state = ?"
            args.append(state)
        return [_command(r) for r in self._conn().execute(sql + " ORDER BY id", args)]

    def pending_commands(self, run_id: int) -> list[Command]:
        return self.commands(run_id, "pending")

    def mark_command(self, command_id: int, state: str, *, step: int | None = None, detail: str = "",
                     event_payload: dict | None = None, lr: float | None = None) -> None:
        """The trainer's verdict on a command, with its event, in one transaction; `lr`, the
        run's LR with the command applied, goes into `runs.lr` in the same transaction, so
        that the server never sees a command applied and its division missing from the LR."""
        if state not in ("applied", "rejected"):
            raise ValueError(f"a command ends applied or rejected, not {state!r}")
        self.flush()
        now = time.time()
        conn = self._writer()
        with transaction(conn):
            row = conn.execute("SELECT run_id FROM commands WHERE id = ?", (command_id,)).fetchone()
            if row is None:
                raise KeyError(command_id)
            conn.execute(
                "UPDATE commands SET state = ?, applied_step = ?, applied_at = ?, detail = ? WHERE id = ?",
                (state, step, now, detail, command_id))
            if lr is not None:
                conn.execute("UPDATE runs SET lr = ? WHERE id = ?", (lr, row["run_id"]))
            payload = {"command_id": command_id, **(event_payload or {})}
            if detail:
                payload["detail"] = detail
            conn.execute(
                "INSERT INTO events (run_id, step, wall, kind, payload) VALUES (?, ?, ?, ?, ?)",
                (row["run_id"], step, now, "command_" + state, json.dumps(payload, sort_keys=True)))
