"""benchmarks/scaling_model.py's arithmetic: no communication on one GPU, bf16 halves it,
overlap never makes a step slower, and the compute part scales with the per-GPU batch."""

from __future__ import annotations

import subprocess
import sys
import json
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_scaling_model_rows():
    out = subprocess.run([sys.executable, "benchmarks/scaling_model.py", "--json"], cwd=REPO, capture_output=True,
                         text=True, check=True).stdout
    rows = json.loads(out)["rows"]
    one = [r for r in rows if r["gpus"] == 1]
    assert len(one) == 1 and one[0]["comm_ms"] == 0 and one[0]["x_one_gpu"] == 1.0
    key = lambda r: (r["layout"], r["batch"], r["overlap"])  # noqa: E731
    fp32 = {key(r): r for r in rows if r["grad"] == "fp32" and r["gpus"] > 1}
    for r in rows:
        if r["grad"] == "bf16":
            assert abs(r["comm_ms"] * 2 - fp32[key(r)]["comm_ms"]) < 0.02
            assert r["step_ms"] <= fp32[key(r)]["step_ms"]
    for r in rows:
        if r["overlap"]:
            assert r["step_ms"] <= next(x for x in rows if key(x)[:2] == key(r)[:2] and not x["overlap"]
                                        and x["grad"] == r["grad"])["step_ms"]
    eight = [r for r in rows if r["layout"] == "8 GPUs, NVLink" and r["batch"] == "128 a GPU" and r["overlap"]]
    assert all(r["x_one_gpu"] <= 8.0 for r in eight)
