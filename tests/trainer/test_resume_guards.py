"""What `trainer train` refuses before it touches a run: `--resume never` on a run dir that
holds checkpoints, a `--resume PATH` that does not exist or is not a checkpoint, and model
flags that differ from the checkpoint's. Each is one line on stderr, exit status 2 (4 for a
damaged file), and the checkpoint and the run store are left as they were."""

from __future__ import annotations

import hashlib

import pytest

from trainer.cli import main
from trainer.runstore import RunStore
from trainer_helpers import TINY, run_train


@pytest.fixture(scope="module")
def trained(demo_shards, tmp_path_factory):
    """A run dir with a checkpoint after two steps, and its run store."""
    root = tmp_path_factory.mktemp("guards")
    done = run_train(demo_shards, root / "run", "--max-steps", "2", "--val-every", "0", "--no-tencrop")
    assert done.returncode == 0, done.stderr[-2000:]
    return root / "run"


def _state(run_dir) -> tuple[str, list]:
    ckpt = (run_dir / "checkpoints" / "last.pt").read_bytes()
    store = RunStore(run_dir.parent / "runs.db")
    try:
        run = store.get_run_by_name(run_dir.name)
        return hashlib.sha256(ckpt).hexdigest(), [run["status"], run["step"], len(store.events(run["id"]))]
    finally:
        store.close()


def _refused(capsys, data, run_dir, *flags, status: int = 2) -> str:
    before = _state(run_dir)
    assert main(["train", "--data", str(data), "--run-dir", str(run_dir), *TINY, "--max-steps", "4",
                 "--val-every", "0", "--no-tencrop", *flags]) == status
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert _state(run_dir) == before, "a refused start must leave the checkpoint and the run store alone"
    return err


def test_resume_never_refuses_a_run_dir_with_checkpoints(demo_shards, trained, capsys):
    err = _refused(capsys, demo_shards, trained, "--resume", "never")
    assert "holds checkpoints" in err and "--resume auto" in err


def test_resume_path_that_is_missing_or_not_a_checkpoint(demo_shards, trained, tmp_path, capsys):
    missing = tmp_path / "nope.pt"
    assert "no such checkpoint" in _refused(capsys, demo_shards, trained, "--resume", str(missing))
    damaged = tmp_path / "damaged.pt"
    damaged.write_bytes((trained / "checkpoints" / "last.pt").read_bytes()[:1000])
    err = _refused(capsys, demo_shards, trained, "--resume", str(damaged), status=4)  # exitcodes.CORRUPT
    assert "cannot be read as a checkpoint" in err


@pytest.mark.parametrize("flags, named", [
    (["--width", "0.125"], "width"),
    (["--groups", "1", "--no-lrn"], "groups, lrn"),
    (["--activation", "tanh"], "activation"),
])
def test_model_flags_that_differ_from_the_checkpoint_are_refused(demo_shards, trained, capsys, flags, named):
    err = _refused(capsys, demo_shards, trained, "--resume", "auto", *flags)
    assert f"other model settings ({named})" in err

