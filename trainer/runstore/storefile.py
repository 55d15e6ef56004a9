"""The run store's file: created on purpose and private, opened without ever creating one,
and watched for being removed or replaced while a process uses it.

Part of `trainer.runstore`. SQLite's own `connect()` creates a missing file (0644, with the
umask): a thread opening its first connection after `runs.db` was deleted made a 0-byte
store that the next server took for an empty one. Here only `create_private` makes the
file (0600; SQLite gives -wal and -shm the database's mode), and every connection opens
it with `mode=rw`. A file deleted or replaced under an open connection goes on being read
and written through the old inode, seen by no one else: `FileIdentity.check` compares the
path's (device, inode) with the file opened, before each write batch and in /healthz.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from urllib.parse import quote

from trainer.runstore.errors import RunStoreError


class RunStoreGone(RunStoreError):
    """The store's file was removed or replaced by another file while this process used it."""


def create_private(path: Path) -> None:
    """A new store is created 0600: its metrics, events and operators' names are the owner's."""
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600))
    except FileExistsError:
        pass


def connect_existing(path: Path, timeout: float) -> sqlite3.Connection:
    """A connection to the file at `path`, which must exist: SQLite is told never to create it."""
    return sqlite3.connect(f"file:{quote(str(path))}?mode=rw", uri=True, timeout=timeout, isolation_level=None)


def _identity(path: Path) -> tuple[int, int]:
    st = os.stat(path)
    return st.st_dev, st.st_ino


class FileIdentity:
    """The (device, inode) of the file a RunStore opened; `check` raises RunStoreGone when the
    path no longer names it."""

    def __init__(self, path: Path):
        self.path = path
        self.current = _identity(path)

    def check(self) -> None:
        try:
            now = _identity(self.path)
        except FileNotFoundError:
            raise RunStoreGone(f"run store {self.path} was removed while in use") from None
        except OSError as e:
            raise RunStoreError(f"run store {self.path} cannot be read: {e.strerror or e}") from None
        if now != self.current:
            raise RunStoreGone(f"run store {self.path} was replaced by another file while in use")

    def adopt(self, schema_version: int) -> bool:
        """Take the store now at the path if it is one made on purpose (by `RunStore()`, as
        `trainer serve` or `trainer train` make it: its schema is there and committed); a
        0-byte or foreign file is not one. True when taken."""
        try:
            found = _identity(self.path)
            conn = connect_existing(self.path, timeout=1.0)
            try:
                row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
            finally:
                conn.close()
            if row is None or str(row[0]) != str(schema_version) or found != _identity(self.path):
                return False
        except (OSError, sqlite3.Error):
            return False
        self.current = found
        return True
