"""The run store's transactions, as context managers: `transaction(conn)` for a write
(BEGIN IMMEDIATE ... COMMIT) and `snapshot(conn)` for reads that must agree (BEGIN ...
COMMIT). Every module of `trainer.runstore` that writes uses `transaction`."""

from __future__ import annotations

import sqlite3


class transaction:
    """BEGIN IMMEDIATE ... COMMIT: writers queue on the busy timeout instead of failing."""

    def __init__(self, conn: sqlite3.Connection):
        self.conn = conn

    def __enter__(self):
        self.conn.execute("BEGIN IMMEDIATE")
        return self.conn

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            try:
                self.conn.execute("COMMIT")
                return False
            except sqlite3.Error:
                self._rollback()  # a failed COMMIT (full disk) leaves the transaction open
                raise
        self._rollback()
        return False

    def _rollback(self) -> None:
        # SQLite may have rolled back already (SQLITE_FULL, I/O errors); the first error is the one to report.
        if self.conn.in_transaction:
            try:
                self.conn.execute("ROLLBACK")
            except sqlite3.Error:
                pass


class snapshot(transaction):
    """BEGIN (deferred) ... COMMIT: in WAL mode the reads inside see one consistent state
    and never block the writer."""

    def __enter__(self):
        self.conn.execute("BEGIN")
        return self.conn
