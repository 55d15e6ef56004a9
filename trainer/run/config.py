"""`trainer train`'s one typed config: CLI flags -> TrainConfig -> factories with plain arguments.

The resolved config (absolute `run_dir` and every switch) is stored in the run store and in
every checkpoint. Unknown keys are errors, so a stale checkpoint or a typo fails loudly.
"""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from common import argtypes
from preprocess.contract import DEFAULT_DATA_DIR
from trainer.run.model import MODEL_FIELDS
from trainer.runstore import DEFAULT_MIN_LR
from trainer.runstore.defaults import DEFAULT_RUN_DIR, runs_db_beside
from trainer.runstore.advice import LR_FACTOR, MAX_DROPS, PLATEAU_PATIENCE, PLATEAU_THRESHOLD


@dataclass
class TrainConfig:
    data: str = DEFAULT_DATA_DIR
    run_dir: str = str(DEFAULT_RUN_DIR)
    runs_db: str = ""  # default: runs.db beside the run dir
    name: str = ""  # default: the run dir's name
    # Section 5: batch 128, eps 0.01, momentum 0.9, weight decay 5e-4, ~90 epochs.
    epochs: int = 90
    batch_size: int = 128  # the SGD batch, summed over all ranks
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 5e-4
    optimizer: str = "paper"  # paper | torch
    max_steps: int = 0  # stop after this many steps (0: run all epochs)
    # Model (section 3) and its switches.
    num_classes: int = 0  # 0: from the manifest
    width: float = 1.0
    groups: int = 2
    lrn: bool = True
    overlap_pool: bool = True
    dropout: float = 0.5
    activation: str = "relu"
    bias_const: float = 1.0
    extra_conv: bool = False
    init: str = "paper"
    init_from: str = ""  # a checkpoint of another run to start from (trainer.run.finetune)
    freeze_features: bool = False
    fork_from: str = ""  # RUN_DIR_OR_NAME[@epoch-NNN]: continue another run's trajectory (trainer.run.fork)
    # LR policy: manual (the operator divides it, as the authors did), plateau, step.
    lr_policy: str = "manual"
    patience: int = PLATEAU_PATIENCE
    plateau_threshold: float = PLATEAU_THRESHOLD
    max_drops: int = MAX_DROPS
    step_epochs: int = 30
    lr_factor: float = LR_FACTOR
    lr_scaling: str = "none"  # none (the paper's) | linear: --lr x batch/128 (trainer.run.lrscaling)
    warmup_epochs: int = 0  # with --lr-scaling linear: ramp from --lr to the scaled LR over these epochs
    min_lr: float = DEFAULT_MIN_LR  # operator divisions never take the LR under this
    # Data.
    backend: str = "auto"  # dali | reference | auto (dali on GPU, reference on CPU)
    num_workers: int = 0  # 0: pipeline.loader.auto_workers
    lighting_std: float = 0.1
    mean: str = "image"  # image | channel
    seed: int = 0
    # Device.
    device: str = "auto"  # auto | cpu | cuda
    amp: str = "auto"  # auto (bf16 on GPU) | bf16 | off
    channels_last: str = "auto"
    compile: str = "auto"  # auto (on CUDA) | on | off
    grad_bf16: bool = False  # under DDP: all-reduce the gradients in bf16 (not the paper's)
    # Evaluation, checkpoints, logging.
    val_every: int = 1
    tencrop: bool = True
    resume: str = "auto"  # auto | never | PATH
    allow_class_change: bool = False  # resume on shards with another class list (fine-tuning)
    checkpoint_minutes: float = 30.0  # 0: at every step (tests)
    keep_checkpoints: int = 3
    log_every: int = 20
    hang_timeout: float = 45.0  # under DDP: seconds a rank may stall while the others wait (trainer.run.failfast)
    control_every: int = 16  # under DDP: steps between the ranks' control exchanges (trainer.run.commands)
    demo: bool = False
    trace: str = field(default="", metadata={"help": argparse.SUPPRESS})
    # Test hook: seconds to sleep after each step, so a test can act between two steps
    # on a machine of any speed.
    step_delay: float = field(default=0.0, metadata={"help": argparse.SUPPRESS})

    def model_config(self) -> dict:
        return {k: getattr(self, k) for k in MODEL_FIELDS}

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"unknown config keys: {', '.join(unknown)}")
        return cls(**d)

    def resolved(self) -> "TrainConfig":
        run_dir = Path(self.run_dir).expanduser().resolve()
        runs_db = Path(self.runs_db).expanduser().resolve() if self.runs_db else runs_db_beside(run_dir)
        return dataclasses.replace(self, run_dir=str(run_dir), runs_db=str(runs_db),
                                   data=str(Path(self.data).expanduser().resolve()),
                                   name=self.name or run_dir.name,
                                   init_from=str(Path(self.init_from).expanduser().resolve()) if self.init_from else "")


HELP = {
    "data": "shard directory (train-*.tar, val-*.tar, dataset.json, stats.npz)",
    "run_dir": "where checkpoints and filters.png go; its name names the run",
    "runs_db": "run store (default: runs.db beside the run dir)",
    "batch_size": "SGD batch over all ranks (the paper's 128)",
    "max_steps": "stop after this many optimizer steps (0: all epochs)",
    "num_classes": "classes (0: from dataset.json; must agree with it)",
    "width": "multiplier on every layer's width (small runs)",
    "groups": "2: the paper's two-column connectivity; 1: the one-column net",
    "lr_policy": "manual: only operator commands divide the LR; plateau: divide by --lr-factor when "
                 "validation top-1 has not improved for --patience epochs (at most --max-drops times); "
                 "step: every --step-epochs epochs",
    "plateau_threshold": "a validation improves when its top-1 error beats the best by more than this "
                         "(an error rate; plateau policy and the page's advice)",
    "resume": "auto: continue from run_dir/checkpoints/last.pt if present; never: refuse a run dir "
              "with checkpoints; or a checkpoint path",
    "min_lr": "refuse an operator's division that would take the LR under this (as trainer serve's --min-lr)",
    "allow_class_change": "resume from a checkpoint trained on another class list (same count) on purpose, "
                          "as fine-tuning does; without it such a resume is refused",
    "checkpoint_minutes": "also checkpoint every this many minutes (0: every step)",
    "keep_checkpoints": "epoch checkpoints kept besides last.pt",
    "log_every": "steps between metric rows in the run store",
    "hang_timeout": "under DDP, end the run when one rank has not moved for this many seconds while the "
                    "others wait for it, naming it (0: never; a rank that raises always ends the run)",
    "grad_bf16": "under DDP, all-reduce the gradients in bf16 (half the bytes on the wire; not the paper's)",
    "lr_scaling": "none: --lr as given (the paper's); linear: --lr is for a batch of 128 and the run starts "
                  "from --lr x batch-size/128 (Goyal et al. 2017; not the paper's)",
    "warmup_epochs": "with --lr-scaling linear, raise the LR step by step from --lr to the scaled LR over "
                     "this many epochs",
    "control_every": "under DDP, steps between the ranks' exchanges of operator commands, stop requests and "
                     "timed checkpoints (each takes effect at the next such step, the same on every rank)",
    "amp": "auto: bf16 autocast on GPU, fp32 on CPU",
    "channels_last": "auto: on GPU",
    "compile": "torch.compile the step and the fused paper update; auto: on GPU (the first step waits "
               "for the compiler, shown as it goes)",
    "demo": "mark the run as a demo in the run store",
    "name": "run name in the run store (default: the run dir's name)",
    "num_workers": "DALI threads or reference loader processes per rank; 0: auto (8 DALI threads "
                   "per GPU, 4 otherwise, fewer where they and the loader's feed thread do not fit the rank's "
                   "share of the node's cores)",
    "extra_conv": "section 6's sixth conv layer over the last pooling layer (3x3, 256 kernels, "
                  "see trainer/run/model.py)",
    "init": "paper: weights N(0, 0.01), biases 1 where section 5 says; kaiming: torchvision's "
            "(PyTorch's layer defaults)",
    "init_from": "start a new run from this checkpoint's weights (fine-tuning, section 6): matching layers "
                 "copied, a classifier for other classes fresh, optimizer and LR schedule fresh",
    "fork_from": "RUN_DIR_OR_NAME[@epoch-NNN]: a new run continuing that run from its checkpoint (last.pt, or "
                 "that epoch's): its whole state and flags, the flags given here replacing them",
    "freeze_features": "with --init-from: keep the conv layers fixed, train the FC layers only",
    "backend": "loader: dali, reference (webdataset + Pillow), auto: dali on GPU, reference on CPU",
    "val_every": "validate every this many epochs (0: never)",
    "max_drops": "divisions --lr-policy plateau or step makes at most (0: none)",
}
CHOICES = {
    "optimizer": ("paper", "torch"), "activation": ("relu", "tanh"), "groups": (1, 2),
    "lr_policy": ("manual", "plateau", "step"), "backend": ("auto", "dali", "reference"),
    "mean": ("image", "channel"), "init": ("paper", "kaiming"), "device": ("auto", "cpu", "cuda"), "amp": ("auto", "bf16", "off"),
    "channels_last": ("auto", "on", "off"), "compile": ("auto", "on", "off"), "lr_scaling": ("none", "linear"),
}

# Each numeric flag's range (common.argtypes): a value outside it, NaN or infinity is a
# usage error before anything runs. 0 is allowed where it has a meaning the help names.
RANGES = {
    "epochs": argtypes.positive_int, "batch_size": argtypes.positive_int, "lr": argtypes.learning_rate,
    "momentum": argtypes.fraction(high_open=True), "weight_decay": argtypes.fraction(high_open=True),
    "max_steps": argtypes.count(0), "num_classes": argtypes.count(0), "groups": argtypes.count(1, 2),
    "width": argtypes.Number(float, 0.0, 16.0, low_open=True), "dropout": argtypes.fraction(high_open=True),
    "bias_const": argtypes.Number(float, -10.0, 10.0), "patience": argtypes.positive_int,
    "max_drops": argtypes.count(0), "step_epochs": argtypes.positive_int, "lr_factor": argtypes.lr_factor,
    "min_lr": argtypes.learning_rate, "num_workers": argtypes.count(0, argtypes.MAX_WORKERS),
    "lighting_std": argtypes.Number(float, 0.0, 10.0), "seed": argtypes.seed,
    "val_every": argtypes.count(0), "checkpoint_minutes": argtypes.Number(float, 0.0, 1e6),
    "keep_checkpoints": argtypes.count(0), "log_every": argtypes.positive_int,
    "step_delay": argtypes.Number(float, 0.0, 3600.0), "plateau_threshold": argtypes.fraction(high_open=True),
    "warmup_epochs": argtypes.count(0), "hang_timeout": argtypes.Number(float, 0.0, 1e6),
    "control_every": argtypes.positive_int,
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """One flag per TrainConfig field (--batch-size for batch_size; booleans get --no-X)."""
    for f in dataclasses.fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        help_ = f.metadata.get("help", HELP.get(f.name, ""))
        required = f.default is dataclasses.MISSING
        if f.type in ("bool", bool):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=f.default, help=help_)
            continue
        kind = {"int": int, "float": float}.get(f.type if isinstance(f.type, str) else f.type.__name__, str)
        kind = RANGES.get(f.name, kind)
        if not required and help_ is not argparse.SUPPRESS:
            help_ += " (default: %(default)s)"
        parser.add_argument(flag, type=kind, required=required, choices=CHOICES.get(f.name),
                            default=None if required else f.default, help=help_)


def from_args(args: argparse.Namespace) -> TrainConfig:
    return TrainConfig.from_dict({f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig)})
