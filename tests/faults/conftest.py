"""Fault injection: a small full-able disk for the ENOSPC rows of issue 13.

`small_disk(size_kb)` gives a directory on a tmpfs of that size where the machine lets us
mount one (root in a container usually can); elsewhere the test is skipped with the reason,
and the write-hook tests in each file still cover the same code path.
"""

from __future__ import annotations

import subprocess
import uuid
from pathlib import Path

import pytest


@pytest.fixture
def small_disk(tmp_path):
    mounted: list[Path] = []

    def make(size_kb: int) -> Path:
        point = tmp_path / f"disk-{uuid.uuid4().hex[:8]}"
        point.mkdir()
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_kb}k,mode=0755", "tmpfs", str(point)],
                           capture_output=True, text=True)
        if r.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here ({r.stderr.strip() or r.returncode})")
        mounted.append(point)
        return point

    yield make
    for point in mounted:
        subprocess.run(["umount", "-l", str(point)], capture_output=True)
