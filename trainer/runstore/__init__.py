"""The run store: one SQLite file (WAL) where the trainer and the control server meet.

The trainer's rank 0 writes runs, metrics, events and command outcomes; `trainer serve`
reads them and inserts operator commands. All SQL of the project lives in this package
(docs/design.md, "Run store"), one module per idea: store.py the `RunStore` handle,
transaction.py its transactions (public context managers), schema.py the tables and their
migrations, commands.py the operator commands and the LR floor, lineage.py forks' parents,
errors.py the store's errors (sqlite3's never leave the package). storefile.py owns
the file itself: made 0600 and only on purpose, never by a connection, and watched for
removal. runlock.py is the run dir's lock and id, and how a reader tells a live run from a
dead one (the trainer holds it, the server reads it). defaults.py is where runs and the
store go when no flag says.
May import: common (exit codes) and the standard library; never torch, a domain package
(preprocess, pipeline) or another trainer sub-package: the server imports it
(tests/test_import_graph.py).
"""

from __future__ import annotations

from trainer.runstore.commands import Command, below_floor
from trainer.runstore.errors import RunStoreDamaged, RunStoreError, RunStoreFull, is_damage, store_error
from trainer.runstore.schema import (
    COMMAND_STATES, DATA_WAIT, DEFAULT_MIN_LR, EPOCH, FLOOR_TOLERANCE, IMAGES_PER_SEC, IMAGES_SEEN, INTERRUPTED,
    LOSS, LR, RUN_STATUSES, SCHEMA_VERSION, VAL10_TOP1, VAL10_TOP5, VAL_TOP1, VAL_TOP5, RunProgress,
)
from trainer.runstore.store import MAX_BUFFERED_ROWS, WAL_LIMIT_BYTES, RunStore
from trainer.runstore.storefile import RunStoreGone
from trainer.runstore.transaction import snapshot, transaction

__all__ = [
    "COMMAND_STATES", "DATA_WAIT", "DEFAULT_MIN_LR", "EPOCH", "FLOOR_TOLERANCE", "IMAGES_PER_SEC", "IMAGES_SEEN",
    "INTERRUPTED", "LOSS", "LR", "MAX_BUFFERED_ROWS", "RUN_STATUSES", "SCHEMA_VERSION", "VAL10_TOP1", "VAL10_TOP5",
    "VAL_TOP1", "VAL_TOP5", "WAL_LIMIT_BYTES", "Command", "RunProgress", "RunStore", "RunStoreDamaged",
    "RunStoreError", "RunStoreFull", "RunStoreGone", "below_floor", "is_damage", "snapshot", "store_error",
    "transaction",
]
