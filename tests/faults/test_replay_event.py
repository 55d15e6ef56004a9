"""Issue 26, row 13: a command replayed after a kill between "applied" and the next
checkpoint was applied once (right) but left two identical `lr_change` events. The
trainer's own Control over a real run store: the run applies a command at step 5 and dies
before a checkpoint; the resumed run replays it at step 5. (The same with a real
`trainer train` killed with SIGKILL: tests/trainer/test_command_replay.py, slow.)"""

from __future__ import annotations

from trainer.run.commands import Control, replays_on_resume
from trainer.run.distributed import World
from trainer.runstore import RunStore


def _apply_then_crash(tmp_path, *, event_written: bool):
    store = RunStore(tmp_path / "runs.db")
    run_id, _ = store.start_run("r", {}, lr=0.01)
    cmd, _ = store.submit_lr_divide(run_id, 10, reason="plateau")
    control = Control(World(), store, run_id, checkpoint_seconds=1e9)
    decision = control.exchange(step=5, lr=0.01)
    if event_written:
        control.record(decision, 5, 0.01)
    else:  # killed after the verdict's transaction, before the event's flush
        store.mark_command(cmd.id, "applied", step=5, lr=0.001)
    return store, run_id, cmd


def _resume_and_replay(store, run_id):
    resumed = Control(World(), store, run_id, checkpoint_seconds=1e9,
                      replays=replays_on_resume(store, run_id, known_ids=set()))
    for step in range(3, 8):  # the resumed run re-does steps 3..7 from its checkpoint
        decision = resumed.exchange(step=step, lr=0.01 if step < 5 else 0.001)
        resumed.record(decision, step, 0.01)
        assert (decision.new_lr is not None) == (step == 5)


def test_a_replayed_command_makes_one_event(tmp_path):
    store, run_id, cmd = _apply_then_crash(tmp_path, event_written=True)
    _resume_and_replay(store, run_id)
    changes = store.events(run_id, kinds=["lr_change"])
    assert [(e["step"], e["payload"]["command_id"]) for e in changes] == [(5, cmd.id)]
    assert len(store.events(run_id, kinds=["command_applied"])) == 1


def test_a_replay_writes_the_event_the_killed_run_never_wrote(tmp_path):
    store, run_id, cmd = _apply_then_crash(tmp_path, event_written=False)
    assert store.events(run_id, kinds=["lr_change"]) == []
    _resume_and_replay(store, run_id)
    (change,) = store.events(run_id, kinds=["lr_change"])
    assert change["step"] == 5 and change["payload"]["command_id"] == cmd.id and change["payload"]["replayed"]
    assert change["payload"]["new_lr"] == 0.001
