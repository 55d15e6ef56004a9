"""The bottom room: what every package shares and no domain owns.

Temporary files written whole and swept when their writer is dead (`tempfiles`), the exit
statuses (`exitcodes`), the command lines' argument types and one-line errors
(`argtypes`), whether a process is alive and dying with one's parent (`procs`: the one
liveness rule), and temporary folders named for the process that owns them (`mptemp`).

It imports nothing of the project (docs/architecture.md; tests/test_import_graph.py), and
nothing heavy: `trainer serve` and the reference loader's forkserver import it first.
"""
