"""Helpers for tests that run `preprocess` for real: in this process or as a subprocess."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from preprocess.cli import main
from preprocess.democorpus import SYNSETS_NAME


def shard_args(src: Path, out: Path, *extra: str, max_count: int = 32) -> list[str]:
    return ["shard", "--src", str(src), "--out", str(out), "--synsets", str(src / SYNSETS_NAME),
            "--shard-max-count", str(max_count), "--progress", "off", *extra]


def run_inprocess(args: list[str]) -> int:
    """Single-worker runs only: forking workers from the test process (threads running) can
    deadlock a worker on a lock held at the fork, so more workers are left to `run_cli`."""
    if "--workers" not in args:
        args = [*args, "--workers", "1"]
    assert args[args.index("--workers") + 1] == "1", "run_inprocess runs one worker; use run_cli for more"
    return main(args)


def run_cli(args: list[str], timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "preprocess.cli", *args], capture_output=True, text=True,
                          timeout=timeout)


def output_bytes(out: Path) -> dict[str, bytes]:
    """Shards and index files by name: what must be byte-identical between runs."""
    return {p.name: p.read_bytes() for p in sorted(out.iterdir()) if p.suffix in (".tar", ".idx")}
