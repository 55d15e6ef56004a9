"""benchmarks/gpu_check.sh cannot rot: its --dry-run runs every step on the CPU with tiny
sizes, and the JSON it writes must hold every figure with a sane value.

Timings are never asserted (shared machines); what is asserted is that each step ran,
the correctness checks passed, and the numbers are positive and finite.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "gpu_check.sh"
HAS_DALI = importlib.util.find_spec("nvidia") is not None and importlib.util.find_spec("nvidia.dali") is not None
HAS_TORCHVISION = importlib.util.find_spec("torchvision") is not None


def run_script(*args: str, out: Path | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "OUT"}
    env["PYTHON"] = sys.executable
    if out is not None:
        env["OUT"] = str(out)
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, env=env,
                          timeout=timeout, cwd=ROOT)


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu_check_out")
    proc = run_script("--dry-run", out=out)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    return proc, json.loads((out / "gpu_check.json").read_text()), out


def positive(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x) and x > 0


@pytest.mark.slow
def test_dry_run_records_environment_and_data(dry_run):
    _, rep, out = dry_run
    assert rep["bench"] == "gpu_check" and rep["dry_run"] is True
    assert rep["machine"]["cpus"] >= 1 and rep["machine"]["torch"]
    assert set(rep["modules"]) >= {"torch", "torchvision", "nvidia.dali", "pipeline", "trainer.run.model"}
    # 4 classes x (16 train + 2 val) photos made, then sharded by preprocess.
    assert rep["data"]["images"] == 72 and rep["data"]["source"] in ("photos", "synthetic")
    assert rep["data"]["train_shards"] == 2 and positive(rep["data"]["shard_seconds"])
    assert (out / "gpu_check.log").read_text().count("== ") >= 8
    # The profile says where a training step's time goes: a table, and its top ops.
    assert "aten::" in (out / "profile_train.txt").read_text()
    top = rep["measurements"]["profile_train"]["top"]
    assert len(top) >= 5 and 0 < sum(t["share"] for t in top) <= 1.0001


@pytest.mark.slow
def test_dry_run_runs_every_step_it_can(dry_run):
    _, rep, _ = dry_run
    steps = rep["steps"]
    expected = ["data", "dali_vs_cpu", "center_vs_reference", "loss_falls", "dali_pipeline",
                "dali_pipeline_all_threads", "dali_external_source", "dali_levers", "reference_loader", "train_bare", "scaling_inputs", "train_levers",
                "profile_train", "train_fed", "trainer_loop", "gpu_decode", "pytest_gpu", "train_bare_compiled"]
    assert list(steps) == expected
    assert steps["train_bare_compiled"] == {"status": "skipped", "reason": "dry run"}
    scaling = rep["measurements"]["scaling_inputs"]  # what benchmarks/scaling_model.py needs
    assert scaling["allreduce_ms_one_gpu"] == 0.0 and scaling["grad_bytes_fp32"] == 60_965_224 * 4
    assert scaling["step_ms"] > 0
    for name, status in steps.items():
        needs_missing = (name.startswith("dali_") or name == "center_vs_reference") and not HAS_DALI or (
            name == "gpu_decode" and not HAS_TORCHVISION)
        if name == "train_bare_compiled":
            continue
        if needs_missing:
            assert status["status"] == "skipped" and status["reason"].startswith("missing"), (name, status)
        else:
            assert status["status"] == "ok", (name, status)


@pytest.mark.slow
def test_dry_run_correctness_checks_pass(dry_run):
    _, rep, _ = dry_run
    # The project's gpu-marked tests were collected and, on this CPU, skipped (not failed).
    tests = rep["correctness"]["pytest_gpu"]
    assert tests["passed"] and tests["failed"] == 0 and tests["skipped"] >= 1, tests
    loss = rep["correctness"]["loss_falls"]
    assert loss["passed"] and all(math.isfinite(x) for x in loss["losses"])
    assert loss["best"] < 0.75 * loss["start"] and loss["best_step"] >= 3
    if HAS_DALI:
        cmp = rep["correctness"]["dali_vs_cpu"]
        # DALI's CPU decoder is libjpeg-turbo, as Pillow's: the same crops agree to rounding.
        assert cmp["passed"] and cmp["rows"] == 8 and cmp["mean_abs"] < 0.5
        assert cmp["mirrored_mean_abs"] > 5  # a mirrored crop is far off: the check can tell
        center = rep["correctness"]["center_vs_reference"]
        assert center["passed"] and center["same_labels"] and center["rows"] == 8


@pytest.mark.slow
def test_dry_run_figures_are_sane_and_table_is_last(dry_run):
    proc, rep, _ = dry_run
    fig = rep["figures"]
    fed = "" if HAS_DALI else "_reference"  # without DALI the fed figures are kept apart
    names = ["reference_images_per_s", "train_bare_images_per_s", f"train_fed{fed}_images_per_s",
             "trainer_loop_images_per_s"]
    names += ["dali_images_per_s"] if HAS_DALI else []
    names += ["gpu_decode_images_per_s"] if HAS_TORCHVISION else []
    for name in names:
        assert positive(fig[name]), (name, fig.get(name))
    assert 0 <= fig[f"data_wait_fraction{fed}"] <= 1 and 0 <= fig["trainer_loop_data_wait_fraction"] <= 1
    assert rep["measurements"]["train_bench"]["bench"] == "train_loop"  # the trainer's own bench ran
    # On the CPU the dry run's numbers are far below the GPU targets, and the verdicts say so.
    assert rep["targets"]["train_bare_images_per_s"] == {"target": 15000, "direction": "min", "met": False}
    tail = proc.stdout.strip().splitlines()
    start = next(i for i, line in enumerate(tail) if line.startswith("GPU check, DRY RUN"))
    assert json.loads(tail[start - 1])["bench"] == "gpu_check"  # DESIGN.md's benchmark line
    assert any(line.startswith("check: dali_vs_cpu") or line.startswith("check: loss_falls")
               for line in tail[start:])


FAKE_PYTHON = """#!/usr/bin/env bash
# Stands in for the GPU host's python3: DALI and webdataset are missing, pip only prints.
case "$1" in
  -c) [[ "$2" == *nvidia.dali* || "$2" == *webdataset* ]] && exit 1; exit 0 ;;
  -V) echo "Python 3.12 (fake)" ;;
  -m) shift 2; for a in "$@"; do [[ "$a" == *.whl ]] && echo "PIP $(basename "$a")"; done ;;
  *) echo "CHECK PYTHONPATH=$PYTHONPATH"; echo "CHECK LD_LIBRARY_PATH=${LD_LIBRARY_PATH:-}" ;;
esac
"""


def test_staged_wheels_are_all_installed(tmp_path):
    """The GPU host's path through gpu_check.sh, with a fake interpreter: the DALI parts
    are joined and unpacked, every wheel in them (stage-dali-wheels stages DALI's whole
    requirement set, the real nvJPEG included) and in pydeps is installed, and the install
    folder goes on PYTHONPATH."""
    stage, wheels = tmp_path / "stage", tmp_path / "wheels"
    wheels.mkdir()
    for name in ("nvidia_dali_cuda130-2.4.0-py3-none-manylinux_2_28_x86_64.whl",
                 "nvidia_nvjpeg-13.3.2.43-py3-none-manylinux2014_x86_64.whl", "gast-0.7.0-py3-none-any.whl"):
        (wheels / name).write_bytes(os.urandom(3000))
    (stage / "parts").mkdir(parents=True)
    tar = subprocess.run(["tar", "-C", str(wheels), "-cf", "-", "."], capture_output=True, check=True).stdout
    for i in range(3):  # cut as stage-dali-wheels cuts: the parts only make sense together
        (stage / "parts" / f"part-{i:02d}").write_bytes(tar[i * len(tar) // 3 : (i + 1) * len(tar) // 3])
    (stage / "pydeps").mkdir()
    (stage / "pydeps" / "webdataset-1.0.2-py3-none-any.whl").write_bytes(b"x")
    fake = tmp_path / "python"
    fake.write_text(FAKE_PYTHON)
    fake.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "LD_LIBRARY_PATH")}
    env.update(OUT=str(tmp_path / "out"), PYTHON=str(fake), GPU_CHECK_STAGE=str(stage))
    proc = subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True, env=env, timeout=60, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    installed = sorted(line.split()[1] for line in proc.stdout.splitlines() if line.startswith("PIP "))
    assert installed == ["gast-0.7.0-py3-none-any.whl", "nvidia_dali_cuda130-2.4.0-py3-none-manylinux_2_28_x86_64.whl",
                         "nvidia_nvjpeg-13.3.2.43-py3-none-manylinux2014_x86_64.whl",
                         "webdataset-1.0.2-py3-none-any.whl"]
    path = next(line for line in proc.stdout.splitlines() if line.startswith("CHECK PYTHONPATH="))
    assert path.split("=", 1)[1].split(":")[0] == str(ROOT) and path.endswith("/site")
    assert (tmp_path / "out" / "gpu_check.log").read_text().count("PIP ") == 4


def test_without_out_and_dry_run_it_refuses():
    proc = run_script(timeout=60)
    assert proc.returncode == 2 and "set OUT" in proc.stderr
