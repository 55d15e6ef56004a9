"""`RunStore`: the handle on one run store file that the trainer and the server hold.

One SQLite connection per thread, WAL, a busy timeout; buffered metric and event writes;
the file's identity watched (storefile.py). Its commands are commands.py's, its fork
records lineage.py's. Every public method is wrapped by `errors.at_edge`, so what SQLite
raises leaves the store as its own error, never as a `sqlite3` exception.
"""

from __future__ import annotations

import json
import math
import sqlite3
import threading
import time
from pathlib import Path

from trainer.runstore.commands import CommandsMixin
from trainer.runstore.errors import RunStoreDamaged, RunStoreError, at_edge, is_damage
from trainer.runstore.lineage import LineageMixin
from trainer.runstore.schema import MIGRATIONS, RUN_STATUSES, SCHEMA_VERSION, RunProgress, _schema_statements
from trainer.runstore.storefile import FileIdentity, connect_existing, create_private
from trainer.runstore.transaction import snapshot, transaction

# Metric and event rows kept in memory while the file cannot be written (a full disk):
# about 9 hours of an ImageNet run's rows; older ones are dropped beyond it.
MAX_BUFFERED_ROWS = 100_000
# What the WAL file is cut back to once a checkpoint has emptied it. A WAL grows while a
# reader holds an old snapshot (the server's page on a long query) and otherwise kept its
# largest size on disk for good (280 MB after one burst in a test): on a small or shared
# disk that is the room the store later runs out of. SQLite's own checkpoint threshold is
# ~4 MB, so this leaves steady writing untouched.
WAL_LIMIT_BYTES = 8 << 20


def _run(row: sqlite3.Row | None) -> dict | None:
    if row is None:
        return None
    run = {k: row[k] for k in row.keys()}
    run["config"] = json.loads(run["config"])
    run["progress"] = json.loads(run["progress"])
    run["holder"] = json.loads(run["holder"])
    return run


def _bounded(rows: list, store: "RunStore") -> list:
    extra = len(rows) - MAX_BUFFERED_ROWS
    if extra > 0:
        store.dropped_rows += extra
        return rows[extra:]
    return rows


class RunStore(CommandsMixin, LineageMixin):
    """Thread-safe handle: one SQLite connection per thread, WAL, a busy timeout.

    Metric and event writes are buffered and committed together at most once per
    `flush_interval` seconds (or when `flush()` is called), so a reader polling hard
    beside the trainer costs it one short transaction a second, not one per step.
    """

    def __init__(self, path: str | Path, *, busy_timeout_s: float = 10.0, flush_interval: float = 1.0):
        self.path = Path(path)
        self.busy_timeout_s = busy_timeout_s
        self.flush_interval = flush_interval
        self._local = threading.local()
        self._lock = threading.Lock()
        self._metric_buf: list[tuple] = []
        self._event_buf: list[tuple] = []
        self._last_flush = time.monotonic()
        self.dropped_rows = 0  # rows given up while the file could not be written
        self._generation = 0  # +1 each time another file at the path is adopted (reopen)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            create_private(self.path)
            self.file = FileIdentity(self.path)
            self._init_schema_retrying()
        except (OSError, sqlite3.Error) as e:
            if is_damage(e):
                raise self.damaged(e) from e
            raise RunStoreError(f"cannot open run store {self.path}: {e}") from e

    # -- connection and schema -------------------------------------------------------
    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is not None and self._local.generation != self._generation:
            conn.close()  # a connection to the file that was at the path before `reopen`
            conn = None
        if conn is None:
            conn = connect_existing(self.path, self.busy_timeout_s)
            self._local.generation = self._generation
            conn.row_factory = sqlite3.Row
            conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout_s * 1000)}")
            conn.execute("PRAGMA synchronous = NORMAL")
            conn.execute(f"PRAGMA journal_size_limit = {WAL_LIMIT_BYTES}")
            self._local.conn = conn
        return conn

    def _writer(self) -> sqlite3.Connection:
        """The connection for a write: only while the path still names the file opened
        (storefile.py), else RunStoreGone, so no write goes into a deleted or replaced file."""
        self.file.check()
        return self._conn()

    def reopen(self) -> bool:
        """Use the store now at the path, if one was made there on purpose after this one was
        removed or replaced (storefile.FileIdentity.adopt); True when it is used from now on.
        The caller registers its run there again: ids of the old file mean nothing in it."""
        if not self.file.adopt(SCHEMA_VERSION):
            return False
        self._generation += 1
        return True

    def rebind_buffered(self, old_run_id: int, new_run_id: int) -> None:
        """Buffered metric and event rows of a run, moved to its id in a reopened store."""
        with self._lock:
            self._metric_buf = [(new_run_id, *r[1:]) if r[0] == old_run_id else r for r in self._metric_buf]
            self._event_buf = [(new_run_id, *r[1:]) if r[0] == old_run_id else r for r in self._event_buf]

    def _init_schema_retrying(self) -> None:
        """`_init_schema`, tried again while another process holds the file: two processes
        creating one store at once can get "database is locked" at once, not after the busy
        timeout (SQLite refuses a lock upgrade that could deadlock without waiting), as two
        trainers started together on one runs.db did in CI."""
        deadline = time.monotonic() + self.busy_timeout_s
        while True:
            try:
                return self._init_schema()
            except sqlite3.OperationalError as e:
                if "locked" not in str(e) and "busy" not in str(e) or time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def _init_schema(self) -> None:
        conn = self._conn()
        conn.execute("PRAGMA journal_mode = WAL")
        with transaction(conn):
            for stmt in _schema_statements():
                conn.execute(stmt)
            row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
            version = SCHEMA_VERSION if row is None else int(row["value"])
            while version in MIGRATIONS and version < SCHEMA_VERSION:
                for stmt in MIGRATIONS[version]:
                    conn.execute(stmt)
                version += 1
            if row is None or int(row["value"]) != version:
                conn.execute("INSERT OR REPLACE INTO meta VALUES ('schema_version', ?)", (str(version),))
            if version != SCHEMA_VERSION:
                raise RunStoreError(
                    f"{self.path} has schema version {row['value']}, this code uses {SCHEMA_VERSION}"
                )

    def check_integrity(self) -> None:
        """PRAGMA quick_check (reads every page once: for a start, not for each request)."""
        try:
            rows = [r[0] for r in self._conn().execute("PRAGMA quick_check(1)")]
        except sqlite3.DatabaseError as e:
            rows = [str(e)]
        if rows != ["ok"]:
            raise self.damaged(" ".join(" ".join(rows).replace("*** in database main ***", "").split()))

    def damaged(self, detail) -> RunStoreDamaged:
        return RunStoreDamaged(f"run store {self.path} is damaged ({detail}): stop its readers and writers, move "
                               f"it aside (or rescue it with `sqlite3 {self.path.name} .recover`) and restart; "
                               f"a new one is created, and the runs' checkpoints are unaffected")

    def probe(self) -> None:
        """One cheap read of each table (an index seek each), so that a damaged page under any
        of them raises here, and a removed or replaced file raises RunStoreGone: /healthz."""
        self.file.check()
        conn = self._conn()
        with snapshot(conn):
            conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
            for table in ("runs", "events", "commands"):
                conn.execute(f"SELECT * FROM {table} ORDER BY id DESC LIMIT 1").fetchone()
            conn.execute("SELECT * FROM metrics ORDER BY run_id DESC, name DESC, step DESC LIMIT 1").fetchone()

    def close(self) -> None:
        self.flush()
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    # -- runs --------------------------------------------------------------------------
    def start_run(self, name: str, config: dict, *, lr: float | None = None,
                  holder: dict | None = None) -> tuple[int, bool]:
        """Create the run, or mark an existing one of that name running again (a restart).
        `holder` names the trainer process (pid, host) that holds the run's lock.

        Returns (run_id, resumed)."""
        now = time.time()
        conn = self._writer()
        held = json.dumps(holder or {}, sort_keys=True)
        with transaction(conn):
            row = conn.execute("SELECT id, lr FROM runs WHERE name = ?", (name,)).fetchone()
            if row is None:
                cur = conn.execute(
                    "INSERT INTO runs (name, config, status, created_at, updated_at, lr, holder, heartbeat_at)"
                    " VALUES (?, ?, 'running', ?, ?, ?, ?, ?)",
                    (name, json.dumps(config, sort_keys=True), now, now, lr, held, now),
                )
                return int(cur.lastrowid), False
            conn.execute(
                "UPDATE runs SET status = 'running', config = ?, updated_at = ?, finished_at = NULL, lr = ?,"
                " holder = ?, heartbeat_at = ? WHERE id = ?",
                (json.dumps(config, sort_keys=True), now, row["lr"] if lr is None else lr, held, now, row["id"]),
            )
            return int(row["id"]), True

    def heartbeat(self, run_id: int) -> None:
        """The holder is alive (written every few seconds by a thread of the trainer)."""
        self._writer().execute("UPDATE runs SET heartbeat_at = ? WHERE id = ?", (time.time(), run_id))

    def set_status(self, run_id: int, status: str) -> None:
        if status not in RUN_STATUSES:
            raise ValueError(f"unknown run status {status!r}")
        self.flush()
        now = time.time()
        finished = now if status != "running" else None
        self._writer().execute(
            "UPDATE runs SET status = ?, updated_at = ?, finished_at = ? WHERE id = ?",
            (status, now, finished, run_id),
        )

    def update_progress(self, run_id: int, *, epoch: float, step: int, lr: float,
                        progress: RunProgress = RunProgress()) -> None:
        """The run's current position; `progress` holds the rest (epochs, ETA, images/s...)."""
        self._writer().execute(
            "UPDATE runs SET epoch = ?, step = ?, lr = ?, progress = ?, updated_at = ? WHERE id = ?",
            (epoch, step, lr, json.dumps(progress.to_json(), sort_keys=True), time.time(), run_id),
        )

    def get_run(self, run_id: int) -> dict | None:
        return _run(self._conn().execute("SELECT * FROM runs WHERE id = ?", (run_id,)).fetchone())

    def get_run_by_name(self, name: str) -> dict | None:
        return _run(self._conn().execute("SELECT * FROM runs WHERE name = ?", (name,)).fetchone())

    def list_runs(self) -> list[dict]:
        rows = self._conn().execute("SELECT * FROM runs ORDER BY id DESC").fetchall()
        return [_run(r) for r in rows]

    def current_run(self) -> dict | None:
        """The most recently updated running run, else the most recent run."""
        conn = self._conn()
        row = conn.execute(
            "SELECT * FROM runs WHERE status = 'running' ORDER BY updated_at DESC, id DESC LIMIT 1"
        ).fetchone()
        if row is None:
            row = conn.execute("SELECT * FROM runs ORDER BY id DESC LIMIT 1").fetchone()
        return _run(row)

    # -- metrics and events (buffered) ------------------------------------------------
    def log_metrics(self, run_id: int, step: int, epoch: float, values: dict[str, float]) -> None:
        wall = time.time()
        with self._lock:
            for name, value in values.items():
                v = float(value)
                self._metric_buf.append((run_id, name, int(step), float(epoch), wall, v if math.isfinite(v) else None))
        self.maybe_flush()

    def log_event(self, run_id: int, step: int | None, kind: str, payload: dict | None = None, *, flush: bool = False) -> None:
        with self._lock:
            self._event_buf.append((run_id, step, time.time(), kind, json.dumps(payload or {}, sort_keys=True)))
        if flush:
            self.flush()
        else:
            self.maybe_flush()

    def maybe_flush(self) -> None:
        if time.monotonic() - self._last_flush >= self.flush_interval:
            self.flush()

    def flush(self) -> None:
        """Write the buffered rows. If the file cannot take them (a full disk), they go back
        into the buffer, the oldest dropped beyond MAX_BUFFERED_ROWS, and the error is raised."""
        with self._lock:
            metrics, events = self._metric_buf, self._event_buf
            self._metric_buf, self._event_buf = [], []
            self._last_flush = time.monotonic()
        if not metrics and not events:
            return
        try:
            conn = self._writer()
            with transaction(conn):
                # A step re-done after a resume replaces the earlier attempt's value.
                conn.executemany("INSERT OR REPLACE INTO metrics VALUES (?, ?, ?, ?, ?, ?)", metrics)
                conn.executemany("INSERT INTO events (run_id, step, wall, kind, payload) VALUES (?, ?, ?, ?, ?)",
                                 events)
        except BaseException:
            with self._lock:
                self._metric_buf = _bounded(metrics + self._metric_buf, self)
                self._event_buf = _bounded(events + self._event_buf, self)
            raise

    def latest_metrics(self, run_id: int) -> dict[str, dict]:
        """{name: {step, epoch, value}} of each metric's last row, from one snapshot, so a
        flush landing mid-call never shows one name a step ahead of another.

        Names are found by index seeks (next name after the last one), not by scanning
        every row of a long run."""
        conn = self._conn()
        out: dict[str, dict] = {}
        with snapshot(conn):
            name = ""
            while True:
                row = conn.execute(
                    "SELECT name FROM metrics WHERE run_id = ? AND name > ? ORDER BY name LIMIT 1",
                    (run_id, name)).fetchone()
                if row is None:
                    return out
                name = row["name"]
                last = conn.execute(
                    "SELECT step, epoch, value FROM metrics WHERE run_id = ? AND name = ?"
                    " ORDER BY step DESC LIMIT 1", (run_id, name)).fetchone()
                out[name] = {"step": last["step"], "epoch": last["epoch"], "value": last["value"]}

    def best_metric(self, run_id: int, name: str) -> float | None:
        row = self._conn().execute(
            "SELECT MIN(value) AS v FROM metrics WHERE run_id = ? AND name = ?", (run_id, name)).fetchone()
        return None if row is None else row["v"]

    def last_metric(self, run_id: int, name: str) -> dict | None:
        """{step, epoch, wall, value} of one metric's last row: one index seek (the server
        asks for a few names per request; latest_metrics scans every name)."""
        row = self._conn().execute(
            "SELECT step, epoch, wall, value FROM metrics WHERE run_id = ? AND name = ?"
            " ORDER BY step DESC LIMIT 1", (run_id, name)).fetchone()
        return None if row is None else dict(row)

    def metric_series(self, run_id: int, name: str, *, since_step: int = 0, max_points: int = 1000) -> list[dict]:
        """Rows of one metric from `since_step` on, at most `max_points` of them.

        Long series are downsampled by index seeks at evenly spaced steps, so the cost
        grows with max_points, not with the number of stored rows."""
        conn = self._conn()
        max_points = max(1, int(max_points))
        rows = conn.execute(
            "SELECT step, epoch, wall, value FROM metrics WHERE run_id = ? AND name = ? AND step >= ?"
            " ORDER BY step LIMIT ?", (run_id, name, since_step, max_points + 1)).fetchall()
        if len(rows) <= max_points:
            return [dict(r) for r in rows]
        last = conn.execute(
            "SELECT step, epoch, wall, value FROM metrics WHERE run_id = ? AND name = ?"
            " ORDER BY step DESC LIMIT 1", (run_id, name)).fetchone()
        first_step, last_step = rows[0]["step"], last["step"]
        if max_points == 1:
            return [dict(last)]
        # All seeks in one statement: target i is ceil(first + i*span/(n-1)) in integer
        # arithmetic; SQLite runs the n index seeks without n round trips through Python.
        picked = conn.execute(
            "WITH RECURSIVE t(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM t WHERE i + 1 < ?)"
            " SELECT DISTINCT m.step, m.epoch, m.wall, m.value FROM t JOIN metrics m"
            " ON m.run_id = ? AND m.name = ? AND m.step = (SELECT step FROM metrics"
            "  WHERE run_id = ? AND name = ? AND step >= ? + (t.i * ? + ?) / ? ORDER BY step LIMIT 1)"
            " ORDER BY m.step",
            (max_points - 1, run_id, name, run_id, name, first_step, last_step - first_step,
             max_points - 2, max_points - 1)).fetchall()
        out = [dict(r) for r in picked]
        if not out or out[-1]["step"] != last["step"]:
            out.append(dict(last))
        return out

    def metric_names(self, run_id: int) -> list[str]:
        return [r["name"] for r in self._conn().execute(
            "SELECT DISTINCT name FROM metrics WHERE run_id = ? ORDER BY name", (run_id,))]

    def events(self, run_id: int, *, since_id: int = 0, kinds: list[str] | None = None, limit: int = 1000) -> list[dict]:
        sql = "SELECT * FROM events WHERE run_id = ? AND id > ?"
        args: list = [run_id, since_id]
        if kinds:
            sql += f" AND kind IN ({','.join('?' * len(kinds))})"
            args += list(kinds)
        sql += " ORDER BY id LIMIT ?"
        args.append(limit)
        out = []
        for r in self._conn().execute(sql, args):
            d = dict(r)
            d["payload"] = json.loads(d["payload"])
            out.append(d)
        return out


at_edge(RunStore)
