"""Exit statuses of every console script (`preprocess`, `trainer ...`, `trainer serve`).

One class of failure, one code, so that a scheduler or a shell loop can tell a failure
worth retrying (a full disk) from an input to fix or a run that went wrong. The README's
"Exit statuses" table is written from this module; keep the two equal.
"""

OK = 0
FAILED = 1       # the job ran but its result is bad: too many rejects, verify found damage, loss became NaN
USAGE = 2        # an input the user can fix: an option, a missing or contradicting file, a run held by another trainer
INCOMPLETE = 3   # evaluate saw fewer samples than dataset.json lists (damaged samples were skipped)
CORRUPT = 4      # a file this system wrote is damaged (dataset.json, stats.npz, an index, a checkpoint, runs.db)
NO_SPACE = 5     # the disk or quota is full; nothing half-written is left: free space and rerun the same command
INTERRUPTED = 130  # SIGINT: rerun the same command (with --resume auto for training) to go on
