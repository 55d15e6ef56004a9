"""Which run a run was forked from (`trainer train --fork-from`): the `runs.parent_id` and
`runs.forked_at_step` columns (schema version 3), written once by the fork's trainer and
read by the server's run list and tree."""

from __future__ import annotations

from trainer.runstore.transaction import transaction


class LineageMixin:
    """RunStore's fork record; it uses its `_writer()`."""

    def record_fork(self, run_id: int, parent_id: int | None, step: int) -> None:
        """`parent_id` is None when the parent is not in this store (another runs.db)."""
        conn = self._writer()
        with transaction(conn):
            conn.execute("UPDATE runs SET parent_id = ?, forked_at_step = ? WHERE id = ?", (parent_id, step, run_id))
