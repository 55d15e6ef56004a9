"""The README's commands as a new user types them (issue 31): in a folder holding `imagenet/`
laid out as Kaggle's CLS-LOC (train/<wnid>/, a flat val/, LOC_val_solution.csv and
LOC_synset_mapping.txt at the top), `preprocess shard --src imagenet/` and then `trainer
train` with only what a CPU needs, run as the installed console scripts in that folder,
leave the shards, the checkpoint and the run where `trainer serve`, also without flags but
a port, shows it. Bad input on that path stays one line and changes nothing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from preprocess import democorpus
from preprocess.cli import main as preprocess_main
from preprocess.contract import DEFAULT_DATA_DIR, MANIFEST_NAME
from tests.deploy.serve import free_port, running
from trainer.runstore import RunStore
from trainer.runstore.defaults import DEFAULT_RUN_DIR, DEFAULT_RUNS_DB

VENV_BIN = Path(sys.executable).parent
# 4 classes of 32: one batch of the paper's 128, so no --batch-size is needed on a CPU.
CORPUS = democorpus.CorpusSpec(classes=4, train_per_class=32, val_per_class=2, min_side=64, max_side=80,
                               flat_val=True)
CPU_FLAGS = ["--device", "cpu", "--width", "0.0625"]


def console(name: str, *args: str, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    script = VENV_BIN / name
    assert script.is_file(), f"{script} is missing: install the project (make venv)"
    env = {k: v for k, v in os.environ.items() if not k.startswith("ALEXNET_")}
    return subprocess.run([str(script), *args], cwd=cwd, env={**env, "PYTHONUNBUFFERED": "1"},
                          capture_output=True, text=True, timeout=timeout)


def one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


@pytest.fixture(scope="module")
def card(tmp_path_factory):
    """A folder after the README's two commands: (folder, preprocess's run, trainer's run)."""
    work = tmp_path_factory.mktemp("card")
    democorpus.build(work / "imagenet", CORPUS)
    shard = console("preprocess", "shard", "--src", "imagenet/", cwd=work)
    assert shard.returncode == 0, shard.stderr[-2000:]
    train = console("trainer", "train", "--max-steps", "2", *CPU_FLAGS, cwd=work)
    assert train.returncode == 0, train.stdout[-2000:] + train.stderr[-2000:]
    return work, shard, train


@pytest.mark.slow
def test_the_two_commands_alone_leave_shards_a_checkpoint_and_the_run(card):
    work, shard, train = card
    shards = work / DEFAULT_DATA_DIR
    first = shard.stdout.splitlines()[0]
    assert str(shards) in first and "--out" in first
    assert "LOC_val_solution.csv" in first and "LOC_synset_mapping.txt" in first
    manifest = json.loads((shards / MANIFEST_NAME).read_text())
    # The flat val/ was labelled by the file at the top of imagenet/ (none rejected), the
    # classes named by the other one.
    assert manifest["splits"]["train"]["count"] == 128 and manifest["splits"]["val"]["count"] == 8
    assert manifest["rejected"] == 0
    assert [c["name"] for c in manifest["classes"]][:2] == ["astronaut", "coffee"]

    run_dir = work / DEFAULT_RUN_DIR
    first = train.stdout.splitlines()[0]
    assert f"a new run in {run_dir} on the shards in {shards}" in first and "--run-dir" in first
    assert (run_dir / "checkpoints" / "last.pt").is_file()
    run = RunStore(work / DEFAULT_RUNS_DB).get_run_by_name("alexnet")
    assert run["status"] == "finished" and run["step"] == 2
    assert run["config"]["data"] == str(shards) and run["config"]["run_dir"] == str(run_dir)
    assert run["config"]["resume"] == "auto" and run["config"]["batch_size"] == 128


@pytest.mark.slow
def test_trainer_serve_without_flags_reads_the_store_the_trainer_wrote(card, monkeypatch):
    work, _, _ = card
    monkeypatch.chdir(work)  # the server's cwd: the folder the two commands ran in
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("ALEXNET_")}
    with running([str(VENV_BIN / "trainer"), "serve", "--port", str(port)], env, work / "serve.log", port) as base:
        runs = httpx.get(f"{base}/api/runs", timeout=10).json()
    assert [r["name"] for r in runs] == ["alexnet"]


@pytest.mark.slow
def test_rerunning_both_continues(card):
    work, _, _ = card
    shard = console("preprocess", "shard", "--src", "imagenet/", cwd=work)
    assert shard.returncode == 0 and "0 decoded in this run" in shard.stdout, shard.stdout + shard.stderr
    train = console("trainer", "train", "--max-steps", "3", *CPU_FLAGS, cwd=work)
    assert train.returncode == 0, train.stdout[-2000:] + train.stderr[-2000:]
    first = train.stdout.splitlines()[0]
    assert f"continuing the run in {work / DEFAULT_RUN_DIR} from its newest checkpoint" in first
    assert RunStore(work / DEFAULT_RUNS_DB).get_run_by_name("alexnet")["step"] == 3


@pytest.mark.slow
def test_a_run_dir_held_by_another_trainer_is_one_line(card):
    from trainer.runstore.runlock import hold_run_dir

    work, _, _ = card
    before = RunStore(work / DEFAULT_RUNS_DB).get_run_by_name("alexnet")
    with hold_run_dir(work / DEFAULT_RUN_DIR):
        done = console("trainer", "train", *CPU_FLAGS, cwd=work)
    assert done.returncode == 2
    assert f"held by pid {os.getpid()}" in one_line(done.stderr) and "--run-dir" in done.stderr
    assert RunStore(work / DEFAULT_RUNS_DB).get_run_by_name("alexnet") == before


@pytest.mark.slow
def test_shards_of_another_dataset_are_refused_naming_overwrite(card, tmp_path, capsys, monkeypatch):
    work, _, _ = card
    other = tmp_path / "other"
    democorpus.build(other, democorpus.CorpusSpec(classes=2, train_per_class=2, val_per_class=1,
                                                  min_side=64, max_side=80))
    before = (work / DEFAULT_DATA_DIR / MANIFEST_NAME).read_bytes()
    monkeypatch.chdir(work)
    assert preprocess_main(["shard", "--src", str(other), "--workers", "1", "--progress", "off"]) == 2
    err = one_line(capsys.readouterr().err)
    assert "--overwrite" in err and "--out" in err
    assert (work / DEFAULT_DATA_DIR / MANIFEST_NAME).read_bytes() == before


def _shard_here(folder: Path, capsys, monkeypatch) -> tuple[int, str, str]:
    monkeypatch.chdir(folder)
    rc = preprocess_main(["shard", "--src", "imagenet/", "--workers", "1", "--progress", "off"])
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.mark.parametrize("layout", ["missing", "no_train"])
def test_a_source_that_is_not_one_is_one_line(layout, tmp_path, capsys, monkeypatch):
    if layout == "no_train":
        (tmp_path / "imagenet" / "val").mkdir(parents=True)
    rc, out, err = _shard_here(tmp_path, capsys, monkeypatch)
    assert rc == 2 and out == "" and "--src imagenet" in one_line(err)
    assert not (tmp_path / DEFAULT_DATA_DIR).exists()


def test_a_flat_val_without_its_labels_file_names_the_file_and_the_flag(tmp_path, capsys, monkeypatch):
    src = democorpus.build(tmp_path / "imagenet", democorpus.CorpusSpec(
        classes=2, train_per_class=1, val_per_class=1, min_side=64, max_side=80, flat_val=True))
    (src / democorpus.VAL_SOLUTION_NAME).unlink()
    rc, out, err = _shard_here(tmp_path, capsys, monkeypatch)
    line = one_line(err)
    assert rc == 2 and out == ""
    assert f"imagenet/{democorpus.VAL_SOLUTION_NAME} does not exist" in line and "--val-labels" in line
    assert not (tmp_path / DEFAULT_DATA_DIR).exists()


def test_a_val_in_class_folders_needs_no_labels_file(tmp_path, capsys, monkeypatch):
    """A LOC_val_solution.csv beside a val/ in class folders is not taken: the folders label it."""
    src = democorpus.build(tmp_path / "imagenet", democorpus.CorpusSpec(
        classes=2, train_per_class=1, val_per_class=2, min_side=64, max_side=80))
    (src / democorpus.VAL_SOLUTION_NAME).write_text("ImageId,PredictionString\n")
    rc, out, err = _shard_here(tmp_path, capsys, monkeypatch)
    assert rc == 0, err
    assert "val labels from val/'s class folders" in out.splitlines()[0]
    manifest = json.loads((tmp_path / DEFAULT_DATA_DIR / MANIFEST_NAME).read_text())
    assert manifest["splits"]["val"]["count"] == 4 and manifest["rejected"] == 0


def test_an_explicit_label_flag_wins_over_the_file_in_src(tmp_path, capsys, monkeypatch):
    src = democorpus.build(tmp_path / "imagenet", democorpus.CorpusSpec(
        classes=2, train_per_class=1, val_per_class=1, min_side=64, max_side=80))
    (tmp_path / "names.txt").write_text("n00000001 first\nn00000002 second\n")
    monkeypatch.chdir(tmp_path)
    assert preprocess_main(["shard", "--src", "imagenet", "--synsets", "names.txt", "--out", "elsewhere",
                            "--workers", "1", "--progress", "off"]) == 0
    first = capsys.readouterr().out.splitlines()[0]
    assert "class names names.txt" in first and "default" not in first
    manifest = json.loads((tmp_path / "elsewhere" / MANIFEST_NAME).read_text())
    assert [c["name"] for c in manifest["classes"]] == ["first", "second"]
    assert not (tmp_path / DEFAULT_DATA_DIR).exists() and (src / democorpus.SYNSETS_NAME).is_file()


def test_make_demo_imagenet_runs_the_same_short_commands(tmp_path):
    """`make demo IMAGENET=...` types what the README does: no paths or label files of its own."""
    from trainer.demo.launcher import imagenet_shard_argv, parse_args, train_argv

    assert imagenet_shard_argv(Path("imagenet"))[-3:] == ["shard", "--src", "imagenet"]
    args = parse_args(["--imagenet", "imagenet"])
    assert train_argv(args, None, Path(DEFAULT_DATA_DIR), DEFAULT_RUN_DIR.parent) == []
    args = parse_args(["--imagenet", "imagenet", "--device", "cpu", "--runs-dir", str(tmp_path)])
    # Another runs folder: the run dir says so, and its run store (the one the demo serves) is beside it.
    assert train_argv(args, None, Path(DEFAULT_DATA_DIR), tmp_path) == [
        "--device", "cpu", "--run-dir", str(tmp_path / DEFAULT_RUN_DIR.name)]


def test_trainer_serve_reads_by_default_the_store_trainer_train_writes_by_default(tmp_path, monkeypatch):
    from trainer.cli import build_parser
    from trainer.run.config import from_args
    from trainer.server.settings import ServerSettings

    monkeypatch.chdir(tmp_path)
    for key in [k for k in os.environ if k.startswith("ALEXNET_")]:
        monkeypatch.delenv(key)
    cfg = from_args(build_parser("train")[0].parse_args([])).resolved()
    assert (cfg.data, cfg.run_dir) == (str(tmp_path / "shards"), str(tmp_path / "runs" / "alexnet"))
    assert cfg.resume == "auto"
    assert cfg.runs_db == str(tmp_path / "runs" / "runs.db") == str(ServerSettings().runs_db.absolute())
