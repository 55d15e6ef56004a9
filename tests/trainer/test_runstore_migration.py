"""A run store written by schema version 2 (before forks) opens under version 3: its runs
keep their rows and gain `parent_id`/`forked_at_step` (null: not forks)."""

import sqlite3

from trainer.runstore import SCHEMA_VERSION, RunStore
from trainer.runstore.schema import _SCHEMA


def test_a_version_2_store_gains_the_fork_columns(tmp_path):
    path = tmp_path / "runs.db"
    v2 = _SCHEMA.replace("    heartbeat_at REAL,\n    parent_id INTEGER,\n    forked_at_step INTEGER\n",
                         "    heartbeat_at REAL\n")
    assert v2 != _SCHEMA
    conn = sqlite3.connect(path)
    conn.executescript(v2)
    conn.execute("INSERT INTO meta VALUES ('schema_version', '2')")
    conn.execute("INSERT INTO runs (name, config, status, created_at, updated_at) VALUES ('old', '{}', 'finished', 1, 1)")
    conn.commit()
    conn.close()

    store = RunStore(path)
    run = store.get_run_by_name("old")
    assert (run["parent_id"], run["forked_at_step"], run["status"]) == (None, None, "finished")
    version = store._conn().execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0]
    assert int(version) == SCHEMA_VERSION == 3
