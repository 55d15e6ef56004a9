"""Which checkpoint `trainer train` continues from, what it refuses to continue, and the
first line that says so.

    trainer train ... --resume auto | never | PATH [--allow-class-change]

`auto` takes the newest good checkpoint of the run dir: a damaged last.pt (its checksums do
not match) is passed over for the newest good epoch-NNN.pt, said on the terminal here and
as a `checkpoint_fallback` run event by the trainer. A checkpoint trained on another class
list than the shards' (same count, other classes or order: every label would mean another
class) is refused unless `--allow-class-change` asks for it, as fine-tuning does.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from preprocess.contract import MANIFEST_NAME
from trainer.run.checkpoint import CheckpointDir
from trainer.run.ckptfile import class_change, class_note, load_checkpoint
from trainer.run.fork import parent_record
from trainer.run.model import MODEL_FIELDS, unwrap
from trainer.run.optim import set_lr
from trainer.run.session import RunState, TrainError


def start_line(cfg, ckdir: CheckpointDir, manifest) -> str:
    """Which run dir, new or continued, which shards and which run store, with the flags that
    choose others: the defaults (runs/alexnet, shards, --resume auto) are not typed, so said."""
    latest = ckdir.latest()
    if cfg.resume not in ("auto", "never"):
        what = f"continuing the run in {cfg.run_dir} from {cfg.resume} (--resume)"
    elif cfg.resume == "auto" and latest is not None:
        what = f"continuing the run in {cfg.run_dir} from its newest checkpoint (--resume auto)"
    elif cfg.init_from:
        what = f"a new run in {cfg.run_dir} from the weights of {cfg.init_from} (--init-from)"
    else:
        what = f"a new run in {cfg.run_dir}"
    data = (f"the shards in {cfg.data} ({manifest.num_classes} classes, "
            f"{manifest.split_count('train')} train images)")
    return (f"trainer train: {what} on {data}; run store {cfg.runs_db} "
            f"(--run-dir, --data and --runs-db choose others)")


def choose_checkpoint(cfg, ckdir: CheckpointDir, class_digest: str, *,
                      say: Callable[[str], None]) -> tuple[dict | None, Path | None, list[tuple[str, str]]]:
    """(record, its path, [(damaged checkpoint passed over, why)]); (None, None, []) for a fresh run."""
    fallbacks: list[tuple[str, str]] = []
    if cfg.fork_from and ckdir.latest() is None:  # a fork's first start (trainer.run.fork)
        path = Path(cfg.fork_from)
        ckpt = parent_record(path, say)
        check_classes(cfg, ckpt, path, class_digest, say)
        return ckpt, path, fallbacks
    if cfg.resume == "never":
        if ckdir.latest() is not None:
            raise TrainError(f"{ckdir.dir} holds checkpoints: pass --resume auto to continue the run, "
                             f"or choose another --run-dir")
        return None, None, fallbacks
    if cfg.resume == "auto":
        ckpt, path, fallbacks = ckdir.load_latest(warn=say)
        if ckpt is None:
            return None, None, fallbacks
    else:
        path = Path(cfg.resume)
        if not path.is_file():
            raise TrainError(f"--resume {cfg.resume}: no such checkpoint")
        ckpt = load_checkpoint(path, warn=say)  # damaged: CheckpointCorrupt, exit CORRUPT
    for skipped, why in fallbacks:
        say(f"trainer: passing over {skipped}: {why}; resuming from {path}")
    check_classes(cfg, ckpt, path, class_digest, say)
    return ckpt, path, fallbacks


def check_classes(cfg, ckpt: dict, path: Path, class_digest: str, say: Callable[[str], None]) -> None:
    manifest = Path(cfg.data) / MANIFEST_NAME
    changed = class_change(ckpt, path, class_digest, manifest)
    if changed is None:
        note = class_note(ckpt, path, manifest)
        if note:
            say(note)
        return
    if not cfg.allow_class_change:
        raise TrainError(f"{changed}; resume with the shards it was trained on, or pass "
                         "--allow-class-change to train on the new class list on purpose")
    say(f"trainer: --allow-class-change: {changed}; training on with the new class list on purpose")


def restore(ckpt: dict, path: Path, cfg, model, optimizer, policy) -> RunState:
    """The run's state from checkpoint `ckpt` (read from `path`): the model's weights, the
    optimizer's (its momentum), the LR and the policy; refused where the model's shape differs."""
    differs = [k for k in MODEL_FIELDS if ckpt["config"].get(k) != getattr(cfg, k)]
    if differs:
        raise TrainError(f"{path} was trained with other model settings ({', '.join(differs)}); "
                         f"use another --run-dir or the same flags")
    unwrap(model).load_state_dict(ckpt["model"])
    optimizer.load_state_dict(ckpt["optimizer"])
    set_lr(optimizer, ckpt["lr"])
    policy.load_state_dict(ckpt["policy"])
    return RunState(lr=ckpt["lr"], lr_history=list(ckpt["lr_history"]), epoch=ckpt["epoch"],
                    epoch_step=ckpt["epoch_step"], step=ckpt["step"],
                    applied_commands=list(ckpt["applied_commands"]), resumed_from=str(path))
