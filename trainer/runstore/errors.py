"""The run store's own errors, and the one place that turns sqlite3's into them.

Nothing outside `trainer.runstore` needs to catch a `sqlite3` exception: every public
method of `RunStore` passes what the file raises through `at_edge` below, so a caller
catches `RunStoreError` (busy, locked, I/O), `RunStoreDamaged` (not a database, damaged
pages: exit 4) or `RunStoreFull` (a full disk: exit 5). A misuse of SQL (ProgrammingError,
IntegrityError) is a bug, not the file's state, and passes unchanged.
"""

from __future__ import annotations

import functools
import inspect
import sqlite3

from common import exitcodes


class RunStoreError(RuntimeError):
    pass


class RunStoreDamaged(RunStoreError):
    """The file is not a SQLite database, or its pages are damaged (not a busy or full disk)."""

    exit_code = exitcodes.CORRUPT


class RunStoreFull(RunStoreError):
    exit_code = exitcodes.NO_SPACE


SQLITE_FULL = 13


def store_error(what: str, exc: BaseException) -> RunStoreError:
    """A RunStoreError of the class (damaged, full, other) that `exc` shows."""
    cls = RunStoreDamaged if is_damage(exc) else RunStoreError
    if getattr(exc, "sqlite_errorcode", None) == SQLITE_FULL:
        cls = RunStoreFull
    return cls(f"{what}: {exc}")


SQLITE_CORRUPT, SQLITE_NOTADB = 11, 26


def is_damage(exc: BaseException) -> bool:
    """A damaged store: RunStoreDamaged, or sqlite3's "malformed" / "not a database" (a plain
    DatabaseError with SQLITE_CORRUPT or SQLITE_NOTADB). Locked, busy, full disk and I/O are
    OperationalErrors; a ProgrammingError or IntegrityError is a bug of the caller, and
    never a reason to move the file aside."""
    if isinstance(exc, RunStoreDamaged):
        return True
    if getattr(exc, "sqlite_errorcode", None) in (SQLITE_CORRUPT, SQLITE_NOTADB):
        return True
    return type(exc) is sqlite3.DatabaseError


def _translated(store, exc: sqlite3.Error) -> RunStoreError:
    """A damaged file with the store's advice on what to do, else `store_error`'s class."""
    return store.damaged(exc) if is_damage(exc) else store_error(f"run store {store.path}", exc)


def _edge(method):
    @functools.wraps(method)
    def wrapped(self, *args, **kwargs):
        try:
            return method(self, *args, **kwargs)
        except (sqlite3.OperationalError, sqlite3.DatabaseError) as exc:
            if not (isinstance(exc, sqlite3.OperationalError) or is_damage(exc)):
                raise  # a bug of the caller (ProgrammingError, IntegrityError): shown as itself
            raise _translated(self, exc) from exc
    return wrapped


def at_edge(cls):
    """Every public method of `cls` (its mixins' too) raising the store's errors for sqlite3's."""
    for name in dir(cls):
        attr = inspect.getattr_static(cls, name)
        if not name.startswith("_") and inspect.isfunction(attr):
            if inspect.isgeneratorfunction(attr):
                raise TypeError(f"RunStore.{name} is a generator: its errors would pass the edge")
            setattr(cls, name, _edge(attr))
    return cls

