"""Rank 0's side effects during `trainer train`: the run-store row and events, the
checkpoint files, and filters.png. Other ranks never construct a Session.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from trainer import runstore as rs
from trainer.run.checkpoint import CheckpointDir
from trainer.run.ckptfile import pack
from trainer.run.model import unwrap
from trainer.run.commands import replays_on_resume, settle_included
from trainer.runstore.runlock import observed_status, run_dir_id
from trainer.run.storeguard import GuardedStore, Heartbeat


class TrainError(RuntimeError):
    """Bad input or a refused request: reported as one line, without a traceback."""


@dataclass
class RunState:
    """Where the run is; all of it goes into every checkpoint."""

    lr: float
    lr_history: list = field(default_factory=list)  # [{step, lr, reason, command_ids?}]
    epoch: int = 0  # epochs completed
    epoch_step: int = 0  # batches consumed in the current epoch
    step: int = 0  # optimizer steps taken
    applied_commands: list = field(default_factory=list)  # [{id, step, factor}]
    resumed_from: str = ""
    last_saved_step: int = -1
    forked_from: str = ""  # the parent's checkpoint, on a fork's first start (trainer.run.fork)


def _same_run(row: dict, uid: str, run_dir: str) -> bool:
    """Whether the store's row of this name is the run of this run dir: by the run dir's id
    (runlock.RUN_ID_NAME), or for a row from before the id, by the run dir's path."""
    theirs = row["config"].get("run_uid")
    return theirs == uid if theirs else row["config"].get("run_dir") == run_dir


class Session:
    def __init__(self, cfg, world, state: RunState, ckpt: dict | None, ckdir: CheckpointDir, *,
                 steps_per_epoch: int, holder: dict | None = None):
        self.cfg, self.ckdir = cfg, ckdir
        store = rs.RunStore(cfg.runs_db)
        try:
            self.run_id, resumed = self._start(store, world, state, holder)
        except OSError as e:
            raise rs.store_error(f"cannot write the run store {cfg.runs_db}", e) from e
        # From here on a failing store costs a warning, not the run (trainer/run/storeguard.py).
        self.holder = holder
        self.store = GuardedStore(store, run_id=self.run_id, rejoin=self._rejoin)
        self.heartbeat = Heartbeat(self.store)
        self.heartbeat.start()
        if (resumed or ckpt is not None) and not state.forked_from:  # a fork logs its own event
            self.event(state.step, "restart", {
                "resumed_from_step": state.step, "checkpoint": state.resumed_from or None,
                "replayed_commands": [c["id"] for c in self.replays]})
        fixed = rs.RunProgress(epochs=cfg.epochs, steps_per_epoch=steps_per_epoch, batch_size=cfg.batch_size,
                               world_size=world.world_size, demo=cfg.demo, max_steps=cfg.max_steps)
        from trainer.run.progress import Meter, StoreReporter

        self.reporter = StoreReporter(self.store, self.run_id, fixed=fixed)
        self.reporter.progress(state.step, state.epoch + state.epoch_step / steps_per_epoch, lr=state.lr,
                               meter=Meter(cfg.batch_size), eta_s=0.0, images_seen=state.step * cfg.batch_size,
                               force=True)
        self._filters_warned = False

    def _start(self, store: rs.RunStore, world, state: RunState, holder: dict | None) -> tuple[int, bool]:
        """The run's row: refused when another live trainer holds the name; otherwise started
        (or restarted) with our pid and host, and the commands to replay read."""
        cfg = self.cfg
        existing = store.get_run_by_name(cfg.name)
        if cfg.resume == "never" and existing is not None:
            raise TrainError(f"a run named {cfg.name!r} already exists in {cfg.runs_db}: "
                             f"pass --resume auto to continue it, or choose another --name")
        if existing is not None and existing["config"].get("run_dir") != cfg.run_dir \
                and observed_status(existing) == "running":
            held = existing["holder"]
            raise TrainError(f"run {cfg.name!r} in {cfg.runs_db} is held by pid {held.get('pid', '?')} on host "
                             f"{held.get('host', '?')} (run dir {existing['config'].get('run_dir')}): "
                             f"choose another --name")
        uid = run_dir_id(cfg.run_dir)
        if existing is not None and not _same_run(existing, uid, cfg.run_dir):
            their_dir, done = existing["config"].get("run_dir"), f"step {existing['step']}, {observed_status(existing)}"
            if their_dir == cfg.run_dir:
                raise TrainError(f"run {cfg.name!r} in {cfg.runs_db} belongs to an earlier run dir at {their_dir} "
                                 f"({done}), deleted since: choose another --name for this new run (the old "
                                 f"run's history stays in the store)")
            raise TrainError(f"run {cfg.name!r} in {cfg.runs_db} belongs to the run dir {their_dir} ({done}), not "
                             f"to {cfg.run_dir}: continue it with --run-dir {their_dir}, or choose another --name")
        self.config = {**cfg.to_dict(), "world_size": world.world_size, "run_uid": uid}
        run_id, resumed = store.start_run(cfg.name, self.config, lr=state.lr, holder=holder)
        known = {c["id"]: c for c in state.applied_commands}
        # Commands the store applied after the checkpoint was written (or before any was).
        self.replays = replays_on_resume(store, run_id, set(known)) if resumed else []
        # Commands the checkpoint includes whose verdict never reached the store.
        settle_included(store, run_id, known)
        return run_id, resumed

    def _rejoin(self, store: rs.RunStore) -> int | None:
        """This run's id in a store made again at its path (storeguard.py); None when a row of
        that name there belongs to another run dir."""
        existing = store.get_run_by_name(self.cfg.name)
        if existing is not None and not _same_run(existing, self.config["run_uid"], self.cfg.run_dir):
            return None
        return store.start_run(self.cfg.name, self.config, holder=self.holder)[0]

    def event(self, step: int | None, kind: str, payload: dict) -> None:
        self.store.log_event(self.run_id, step, kind, payload, flush=True)

    def save_checkpoint(self, *, model, optimizer, policy, state: RunState, rngs: list, data_states: list,
                        epoch_end: int | None, class_digest: str) -> Path:
        record = pack(
            model=unwrap(model).state_dict(), optimizer=optimizer.state_dict(), policy=policy.state_dict(),
            lr=state.lr, lr_history=state.lr_history, epoch=state.epoch, epoch_step=state.epoch_step,
            step=state.step,
            rng=rngs,  # one per rank
            data_state=data_states,  # one per rank; None at an epoch boundary
            config=self.config, applied_commands=state.applied_commands, class_digest=class_digest,
        )
        path = self.ckdir.save(record, epoch_end=epoch_end)
        self.event(state.step, "checkpoint", {"path": str(path), "last": str(self.ckdir.last),
                                              "epoch": state.epoch, "step": state.step})
        self.write_filters(model)
        return path

    def write_filters(self, model) -> None:
        """Figure 3 beside the checkpoints."""
        from trainer.run.filters import save_filters_png  # numpy and PIL, only when drawing

        try:
            save_filters_png(unwrap(model), Path(self.cfg.run_dir) / "filters.png")
        except Exception as e:  # a drawing problem must never stop training
            if not self._filters_warned:
                self._filters_warned = True
                print(f"trainer: could not draw filters.png: {e}", flush=True)

    def evaluation(self, state: RunState, epoch: float, mode: str, result: dict) -> None:
        names = (rs.VAL_TOP1, rs.VAL_TOP5) if mode == "center" else (rs.VAL10_TOP1, rs.VAL10_TOP5)
        self.store.log_metrics(self.run_id, state.step, epoch,
                               {names[0]: result["top1_error"], names[1]: result["top5_error"]})
        self.event(state.step, "evaluation", {"mode": mode, "epoch": epoch, **result})

    def finish(self, status: str) -> None:
        self.heartbeat.stop()
        self.store.set_status(self.run_id, status)
        self.store.close()

    def fail(self, state: RunState, message: str) -> None:
        # Each on its own: an event that cannot be written (a full disk) must not leave the
        # run "running".
        try:
            self.event(state.step, "error", {"message": message})
        except Exception:
            pass
        try:
            self.finish("failed")
        except Exception:
            pass
