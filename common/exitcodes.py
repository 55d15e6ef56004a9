"""Exit statuses of every console script (`preprocess`, `trainer ...`, `trainer serve`).

One class of failure, one code, so that a scheduler or a shell loop can tell a failure
worth retrying (a full disk) from an input to fix or a run that went wrong. The README's
"Exit statuses" table is written from this module; keep the two equal.
"""

OK = 0
FAILED = 1       # the job ran but its result is bad: too many rejects, verify found damage, loss became NaN
USAGE = 2        # an input the user can fix: an option, a missing or contradicting file, a run held by another trainer, a port in use
INCOMPLETE = 3   # evaluate saw fewer samples than dataset.json lists (damaged samples were skipped)
CORRUPT = 4      # a file this system wrote is damaged (dataset.json, stats.npz, an index, a checkpoint, runs.db)
NO_SPACE = 5     # the disk or quota is full; nothing half-written is left: free space and rerun the same command
RANK_FAILED = 6  # trainer train under DDP: another rank failed or hung (the line names it); rerun with --resume auto
INTERRUPTED = 130  # SIGINT: rerun the same command (with --resume auto for training) to go on

_NO_SPACE_ERRNOS = frozenset({28, 122})  # ENOSPC, EDQUOT


def is_no_space(exc: BaseException) -> bool:
    """True for a full disk or quota anywhere in the exception's chain."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in _NO_SPACE_ERRNOS:
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def for_error(exc: BaseException) -> int:
    """The status a console script returns for an error it reports in one line: the
    error's own `exit_code` attribute where its class has one, NO_SPACE for a full disk,
    USAGE otherwise."""
    if is_no_space(exc):
        return NO_SPACE
    return int(getattr(exc, "exit_code", USAGE))
