"""Where runs go when no flag says: `trainer train`'s run dir and run store, `trainer serve`'s
run store and `make demo IMAGENET=...`'s, all relative to the current folder. One owner, so
that the trainer writes the store the server reads without a flag on either."""

from __future__ import annotations

from pathlib import Path

RUNS_DIR = Path("runs")
RUNS_DB_NAME = "runs.db"  # the run store, beside the run dirs it records
DEFAULT_RUN_NAME = "alexnet"
DEFAULT_RUN_DIR = RUNS_DIR / DEFAULT_RUN_NAME
DEFAULT_RUNS_DB = RUNS_DIR / RUNS_DB_NAME


def runs_db_beside(run_dir: str | Path) -> Path:
    """The run store of a run dir given without --runs-db: runs.db in its parent folder."""
    return Path(run_dir).parent / RUNS_DB_NAME
