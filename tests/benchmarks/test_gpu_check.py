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
    # By value (issue 25): data, correctness, the pipeline, training compiled and eager, fed,
    # the Trainer, the GPU tests, then the levers and diagnostics that the deadline drops first.
    expected = ["data", "dali_vs_cpu", "center_vs_reference", "loss_falls", "dali_pipeline", "train_bare_compiled",
                "train_bare", "scaling_inputs", "train_fed", "trainer_loop", "pytest_gpu", "fed_levers", "dali_external_source",
                "dali_levers", "dali_pipeline_all_threads", "train_levers", "profile_train", "reference_loader",
                "gpu_decode"]
    assert list(steps) == expected
    assert steps["train_bare_compiled"] == {"status": "skipped", "reason": "dry run"}
    scaling = rep["measurements"]["scaling_inputs"]  # what benchmarks/scaling_model.py needs
    assert scaling["allreduce_ms_one_gpu"] == 0.0 and scaling["grad_bytes_fp32"] == 60_965_224 * 4
    assert scaling["step_ms"] > 0
    for name, status in steps.items():
        dali_step = name.startswith("dali_") or name in ("center_vs_reference", "fed_levers")
        needs_missing = dali_step and not HAS_DALI or (
            name == "gpu_decode" and not HAS_TORCHVISION)
        if name == "train_bare_compiled":
            continue
        if needs_missing:
            assert status["status"] == "skipped" and status["reason"].startswith("missing"), (name, status)
        else:
            assert status["status"] == "ok", (name, status)


@pytest.mark.slow
def test_each_step_is_on_disk_when_it_ends(dry_run):
    _, rep, out = dry_run
    files = sorted((out / "steps").glob("*.json"))
    assert [f.name.split("_", 1)[1][:-5] for f in files] == list(rep["steps"])  # in order, each once
    for number, f in enumerate(files, 1):
        record = json.loads(f.read_text())
        assert f.name.startswith(f"{number:02d}_") and record["status"] == rep["steps"][record["step"]]["status"]
    fed = json.loads(next(f for f in files if f.name.endswith("_train_fed.json")).read_text())
    assert positive(fed["result"]["items_per_s"]) and "train_fed" in "".join(fed["figures"])


@pytest.mark.slow
def test_dry_run_levers_are_timed_as_fed_training(dry_run):
    _, rep, _ = dry_run
    if not HAS_DALI:
        pytest.skip("needs DALI")
    levers = rep["measurements"]["fed_levers"]
    assert list(k for k in levers if isinstance(levers[k], dict) and "items_per_s" in levers[k]) == [
        "product", "hw_decoder_load=0.9", "threads=1", "prefetch=0", "product_again"]
    assert all(positive(levers[k]["items_per_s"]) for k in ("product", "prefetch=0", "product_again"))
    assert levers["prefetch=0"]["prefetch"] == 0 and levers["product"]["prefetch"] == 1
    assert positive(rep["ratios"]["fed_lever_threads=1_over_product"])


def test_a_small_budget_skips_what_does_not_fit_and_keeps_what_ran(tmp_path):
    """The budget is the check's, not a fixed deadline: 40 s of it leave 25 s to the Python,
    which skips the 60-s data step and everything after it, each said so and on disk."""
    proc = run_script("--dry-run", "--budget", "40", out=tmp_path, timeout=120)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rep = json.loads((tmp_path / "gpu_check.json").read_text())
    assert rep["plan"]["deadline_s"] == 25
    assert rep["steps"]["data"]["reason"].startswith("time budget")
    assert len(list((tmp_path / "steps").glob("*.json"))) == len(rep["steps"])


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
    assert json.loads(tail[start - 1])["bench"] == "gpu_check"  # docs/design.md's benchmark line
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
    proc = run_script("--budget", "soon", timeout=60)
    assert proc.returncode == 2 and "--budget is whole seconds" in proc.stderr
