"""The run store's edge: what SQLite raises leaves `trainer.runstore` as the store's own
errors (busy, damaged), never as a `sqlite3` exception; the REST schema of a command is
the store's record; the LR floor is one rule. Real SQLite files throughout."""

from __future__ import annotations

import dataclasses
import sqlite3

import pytest

from trainer import runstore
from trainer.runstore import RunStore, RunStoreDamaged, RunStoreError, below_floor


def test_a_locked_store_raises_the_stores_error(tmp_path):
    store = RunStore(tmp_path / "runs.db", busy_timeout_s=0.1)
    run_id, _ = store.start_run("a", {"name": "a"}, lr=0.01)
    blocker = sqlite3.connect(tmp_path / "runs.db", isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(RunStoreError) as caught:
            store.set_status(run_id, "finished")
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    assert not isinstance(caught.value, sqlite3.Error)
    assert isinstance(caught.value.__cause__, sqlite3.OperationalError)
    assert str(tmp_path / "runs.db") in str(caught.value)


def test_a_damaged_store_raises_damaged_with_the_fix(tmp_path):
    path = tmp_path / "runs.db"
    store = RunStore(path)
    store.start_run("a", {"name": "a"}, lr=0.01)
    store.close()
    with open(path, "r+b") as f:  # the header's magic string: "file is not a database"
        f.write(b"X" * 16)
    with pytest.raises(RunStoreDamaged, match="move it aside"):  # the handle made before the damage
        store.list_runs()


def test_a_callers_bug_is_not_called_damage(tmp_path):
    """A ProgrammingError (a value SQLite cannot bind) was classed as a damaged file, whose
    advice is to move the store aside."""
    store = RunStore(tmp_path / "runs.db")
    with pytest.raises(sqlite3.ProgrammingError):
        store.start_run("a", {"name": "a"}, lr=(0.01,))
    assert not runstore.is_damage(sqlite3.ProgrammingError("Error binding parameter 4"))
    assert runstore.is_damage(sqlite3.DatabaseError("file is not a database"))


def test_the_command_schema_is_the_stores_record():
    from trainer.server.schemas import Command

    assert list(Command.model_fields) == [f.name for f in dataclasses.fields(runstore.Command)]
    assert Command.model_fields["state"].description.startswith("pending, applied")


def test_the_lr_floor_allows_rounding_at_it():
    assert not below_floor(1e-4 / 10, 1e-5)
    assert below_floor(0.9e-5, 1e-5)
    assert not below_floor(1e-3, 1e-5)
