"""Atomic checkpoint files, last.pt plus the last K epochs, and the command-replay bookkeeping."""

from __future__ import annotations

import pytest
import torch

from trainer.run.checkpoint import CheckpointDir
from trainer.run.ckptfile import CheckpointError, load_checkpoint, pack, write_checkpoint
from trainer.run.rngstate import rng_state, set_rng_state
from trainer.run.commands import Control, replays_on_resume
from trainer.run.distributed import World
from trainer.runstore import RunStore


def _state(step: int) -> dict:
    return pack(model={"w": torch.full((3,), float(step))}, optimizer={}, policy={}, lr=0.01, lr_history=[],
                epoch=step, epoch_step=0, step=step, rng=[rng_state()], data_state=[None], config={},
                applied_commands=[], class_digest="0" * 64)


def test_save_is_atomic_and_keeps_last_plus_k_epochs(tmp_path):
    d = CheckpointDir(tmp_path, keep=2)
    for epoch in range(1, 5):
        d.save(_state(epoch), epoch_end=epoch)
    d.save(_state(99))  # a timed checkpoint replaces last.pt only
    names = sorted(p.name for p in d.dir.iterdir())
    assert names == ["epoch-003.pt", "epoch-004.pt", "last.pt"]  # no temporary files left
    assert load_checkpoint(d.last)["step"] == 99
    assert load_checkpoint(d.epoch_path(4))["step"] == 4
    assert d.latest() == d.last


def test_rng_state_round_trip():
    torch.manual_seed(3)
    state = rng_state()
    a = torch.rand(4)
    set_rng_state(state)
    assert torch.equal(a, torch.rand(4))


def test_load_rejects_a_foreign_file(tmp_path):
    write_checkpoint(tmp_path / "x.pt", {"model": {}})
    with pytest.raises(CheckpointError, match="not a trainer checkpoint"):
        load_checkpoint(tmp_path / "x.pt")
    record = _state(1)
    del record["policy"]  # the version says 2, a key resume needs is gone
    write_checkpoint(tmp_path / "y.pt", record)
    with pytest.raises(CheckpointError, match=r"y\.pt is not a trainer checkpoint of format 2 \(missing policy\)"):
        load_checkpoint(tmp_path / "y.pt")


def test_control_applies_pending_commands_and_replays_unknown_applied_ones(tmp_path):
    store = RunStore(tmp_path / "runs.db")
    run_id, _ = store.start_run("r", {}, lr=0.01)
    first, _ = store.submit_lr_divide(run_id, 10)
    control = Control(World(), store, run_id, checkpoint_seconds=1e9)
    decision = control.exchange(step=5, lr=0.01)
    assert decision.new_lr == 0.001 and not decision.stop and not decision.checkpoint
    assert control.record(decision, 5, 0.01) == [{"id": first.id, "step": 5, "factor": 10.0}]
    assert store.get_command(first.id).applied_step == 5
    assert control.exchange(step=6, lr=0.001).new_lr is None  # read once, applied once
    # After a crash: the checkpoint knew nothing; the store says applied at 5.
    replays = replays_on_resume(store, run_id, known_ids=set())
    assert replays == [{"id": first.id, "step": 5, "factor": 10.0, "reason": "", "logged": True}]
    assert replays_on_resume(store, run_id, known_ids={first.id}) == []
    resumed = Control(World(), store, run_id, checkpoint_seconds=1e9, replays=replays)
    assert resumed.exchange(step=4, lr=0.01).new_lr is None
    again = resumed.exchange(step=5, lr=0.01)
    assert again.new_lr == 0.001 and again.commands[0]["replayed"]
    resumed.record(again, 5, 0.01)
    assert len(store.events(run_id, kinds=["command_applied"])) == 1


def test_one_writer_and_one_reader_of_checkpoint_files():
    """The file format is ckptfile.py's alone (torch.save/torch.load of a record), and a run
    saves only through CheckpointDir.save (checkpoint.py): no second saver with its own policy."""
    import ast
    from pathlib import Path

    root = Path(__file__).resolve().parents[2] / "trainer"
    owners = {"torch.save": {"run/ckptfile.py"}, "torch.load": {"run/ckptfile.py"},
              "write_checkpoint": {"run/ckptfile.py", "run/checkpoint.py"}}
    found = {name: set() for name in owners}
    for path in root.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call):
                name = ast.unparse(node.func)
                if name in found:
                    found[name].add(path.relative_to(root).as_posix())
    assert found["torch.save"] == owners["torch.save"]
    assert found["write_checkpoint"] <= owners["write_checkpoint"] and "run/checkpoint.py" in found["write_checkpoint"]
    assert found["torch.load"] <= owners["torch.load"]
