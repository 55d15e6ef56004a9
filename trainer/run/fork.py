"""`trainer train --fork-from RUN_DIR_OR_NAME[@epoch-NNN] --run-dir NEW [changed flags]`:
a new run that continues another run's trajectory from one of its checkpoints.

The fork starts from the checkpoint's whole state, read by the one checkpoint reader
(`load_checkpoint`) and restored by the trainer's resume path: weights, optimizer state
(momentum), LR and its history, the policy's counters, step, epoch, data position and
every rank's RNG. Its config is the parent's with the flags given on the command line
replacing it, so with no flag changed its next step is the step the parent took there.
`--init-from` is the other way to start from a checkpoint: weights only, a fresh schedule.

Refused, in one line each: a changed model shape (use --init-from), an epoch without a
checkpoint (the ones that exist are listed), a run dir that already holds checkpoints
(unless it is this same fork, continued with --resume auto), the parent's own run dir,
and, as resume refuses it, another class list without --allow-class-change. The parent
is only read: forking a run that is being trained is allowed, and its run dir, lock and
store row are never written. The run store records the parent and the step forked at.
"""

from __future__ import annotations

import argparse
import dataclasses
import re
from pathlib import Path

from trainer import runstore as rs
from trainer.run.checkpoint import CheckpointDir
from trainer.run.ckptfile import load_checkpoint
from trainer.run.config import TrainConfig
from trainer.run.model import MODEL_FIELDS
from trainer.run.session import TrainError

GIVEN = "_given_flags"  # the Namespace attribute naming the config fields given on the command line
# Fields that name this run, not the trajectory: never inherited from the parent.
OWN = ("run_dir", "runs_db", "name", "resume", "fork_from", "init_from", "freeze_features", "trace",
       "step_delay")
_EPOCH = re.compile(r"^(.*)@epoch-(\d+)$")


def track_given(parser: argparse.ArgumentParser) -> None:
    """Make `parser` record which TrainConfig flags were given (a default and a flag given
    with the default's value differ: the second replaces the parent's value)."""
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    for action in parser._actions:  # argparse has no public hook for "this option was given"
        if action.dest in names:
            action.__class__ = _recording(type(action))


_RECORDING: dict[type, type] = {}


def _recording(cls: type) -> type:
    if cls not in _RECORDING:
        def __call__(self, parser, namespace, values, option_string=None):
            given = getattr(namespace, GIVEN, None) or set()
            given.add(self.dest)
            setattr(namespace, GIVEN, given)
            cls.__call__(self, parser, namespace, values, option_string)
        _RECORDING[cls] = type(f"Recording{cls.__name__}", (cls,), {"__call__": __call__})
    return _RECORDING[cls]


_loaded: dict[str, dict] = {}  # path -> record: the trainer reads the parent's file once
_given: set[str] = set()  # the flags given to this process's fork (fork_config)


def parent_record(path: str | Path, say=print) -> dict:
    """The parent's record, read once: fork_config reads it for the config and leaves it
    here for the trainer's resume, which takes it (not kept for the run's length)."""
    record = _loaded.pop(str(path), None)
    return record if record is not None else load_checkpoint(path, warn=say)


def _parent_dir(spec: str, who: str, runs_db: Path) -> Path:
    run_dir = Path(who).expanduser()
    if not run_dir.is_dir():
        row = rs.RunStore(runs_db).get_run_by_name(who) if runs_db.is_file() else None
        if row is None or not row["config"].get("run_dir"):
            raise TrainError(f"--fork-from {spec}: {who} is neither a run dir nor a run in {runs_db}")
        run_dir = Path(row["config"]["run_dir"])
    return run_dir.resolve()


def _checkpoint(spec: str, run_dir: Path, epoch: int | None) -> Path:
    ckdir = CheckpointDir(run_dir, 0)
    if epoch is None:
        path = ckdir.latest()
        if path is None:
            raise TrainError(f"--fork-from {spec}: {ckdir.dir} holds no checkpoint")
        return path
    path = ckdir.epoch_path(epoch)
    if not path.is_file():
        have = [p.stem for p in ckdir.epochs()] + ([ckdir.last.name] if ckdir.last.is_file() else [])
        raise TrainError(f"--fork-from {spec}: no checkpoint of epoch {epoch}; {ckdir.dir} has "
                         f"{', '.join(have) or 'none'}")
    return path


def fork_config(args: argparse.Namespace, say=print) -> TrainConfig:
    """The fork's config: the parent's (or, continuing this fork, its own), with the flags
    given replacing it."""
    given = getattr(args, GIVEN, None) or set()
    _given.clear()
    _given.update(given)
    mine = TrainConfig.from_dict({f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig)})
    mine = mine.resolved()
    spec = mine.fork_from
    if mine.init_from:
        raise TrainError("--fork-from continues a run with its whole state; --init-from starts a new one from "
                         "weights only: give one of them")
    m = _EPOCH.match(spec)
    who, epoch = (m.group(1), int(m.group(2))) if m else (spec, None)
    run_dir = _parent_dir(spec, who, Path(mine.runs_db))
    if Path(mine.run_dir) == run_dir:
        raise TrainError(f"--fork-from {spec}: --run-dir is the parent's own run dir; a fork is a new "
                         f"run (and the parent is never written to): choose another --run-dir")
    own = CheckpointDir(mine.run_dir, 0).latest()
    if own is not None:
        # This same fork, continued: its own config, even once the parent's file is rotated away.
        base = load_checkpoint(own, warn=say)["config"]
        path = Path(base.get("fork_from") or ".")
        same = path.parent.parent == run_dir and (epoch is None or path.name == f"epoch-{epoch:03d}.pt")
        if mine.resume != "auto" or not base.get("fork_from") or not same:
            raise TrainError(f"--run-dir {mine.run_dir} already holds checkpoints of another run: a fork starts a "
                             f"new run; choose another --run-dir (or pass --resume auto to continue this same fork)")
    else:
        path = _checkpoint(spec, run_dir, epoch)
        _loaded[str(path)] = record = load_checkpoint(path, warn=say)
        base = record["config"]
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    merged = {k: v for k, v in base.items() if k in names and k not in OWN}
    merged.update({k: getattr(mine, k) for k in names if k in given or k in OWN or k not in merged})
    merged["fork_from"] = str(path)
    cfg = TrainConfig.from_dict(merged)
    changed = [f"--{k.replace('_', '-')} {base.get(k)} -> {getattr(cfg, k)}" for k in MODEL_FIELDS
               if k in base and base[k] != getattr(cfg, k)]
    if changed:
        raise TrainError(f"--fork-from {spec}: a fork continues the parent's network, and "
                         f"{', '.join(changed)} changes it; use --init-from {path} to start a new run from its weights")
    return cfg


def start(state, optimizer, cfg: TrainConfig) -> None:
    """The state just restored from the parent's record (trainer.run.train): what makes it
    a fork. `--lr` given sets the LR from here on, as an operator's change would."""
    from trainer.run.optim import set_lr

    state.applied_commands = []  # the parent's commands belong to the parent's run
    state.forked_from = cfg.fork_from
    if "lr" in _given and cfg.lr != state.lr:
        set_lr(optimizer, cfg.lr)
        state.lr = cfg.lr
        state.lr_history.append({"step": state.step, "lr": state.lr, "reason": "fork: --lr"})


def record_parent(session, state, record: dict) -> None:
    """The fork's row names its parent's row (when the parent is in the same store) and step."""
    parent_cfg = record["config"]
    store = session.store.store  # the GuardedStore's store: the row is written once, now
    parent = store.get_run_by_name(parent_cfg.get("name", ""))
    parent_id = parent["id"] if parent and parent["config"].get("run_dir") == parent_cfg.get("run_dir") else None
    store.record_fork(session.run_id, parent_id, record["step"])
    session.event(state.step, "fork", {"parent": parent_cfg.get("name"), "parent_id": parent_id,
                                       "checkpoint": session.cfg.fork_from, "step": record["step"],
                                       "epoch": record["epoch"], "lr": state.lr})
