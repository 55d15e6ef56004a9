"""`trainer train --data shards/ --run-dir runs/NAME`: AlexNet trained as in the paper.

Read in order: config -> inputs checked (`inputs.py`) -> distributed setup -> model,
optimizer, resume -> data -> run store -> the loop (`train_epoch`) -> validation, LR
policy, checkpoints -> the end. One path for CPU and GPU, one process or torchrun (DDP);
only rank 0 writes the run store, the checkpoints and the terminal, and every rank takes
the same decisions at the same steps (`trainer.run.commands`)."""

from __future__ import annotations

import argparse
import math
import sys
import time
from typing import Callable

import torch

from common import exitcodes
from preprocess.contract import DataError, Manifest
from trainer.run import config as config_mod
from trainer.run import failfast
from trainer import runstore as rs
from trainer.run.checkpoint import CheckpointDir
from trainer.run.ckptfile import CheckpointError
from trainer.run.rngstate import rng_state, set_rng_state
from trainer.run.commands import Control
from trainer.run.compiled import RunCompile, compile_enabled, compile_net
from trainer.run.config import TrainConfig
from trainer.run.devicemap import DeviceMapError
from trainer.run.distributed import World, all_gather_object, setup, teardown, wrap_ddp
from trainer.run import layout
from trainer.run.loaders import rank_batch, train_loader_config
from trainer.run.lr_policy import LRPolicy
from trainer.run.lrscaling import Warmup, initial_lr
from trainer.run.model import build_model, configure_cuda
from trainer.run.optim import create_optimizer, set_lr
from trainer.run.progress import Meter, Progress
from trainer.run.finetune import freeze_features, transfer
from trainer.run.inputs import check_inputs, read_inputs  # noqa: F401 (check_inputs re-exported)
from trainer.run import fork
from trainer.run.resume import choose_checkpoint, restore, start_line
from trainer.runstore.runlock import RunLocked, hold_run_dir
from trainer.run.session import RunState, Session, TrainError
from trainer.run.step import LossTally, TrainStep
from trainer.run.trace import StepTrace
from trainer.run.validation import evaluate_loader, run_precision


def add_arguments(parser: argparse.ArgumentParser) -> None:
    config_mod.add_arguments(parser)
    fork.track_given(parser)


def run(args: argparse.Namespace) -> int:
    try:
        return train(fork.fork_config(args) if args.fork_from else config_mod.from_args(args))
    except (TrainError, DataError, rs.RunStoreError, RunLocked, CheckpointError, DeviceMapError) as e:
        print(f"trainer train: {e}", file=sys.stderr)
        return exitcodes.for_error(e)


def train(cfg: TrainConfig) -> int:
    cfg, manifest = read_inputs(cfg)  # dataset.json read here, once, and passed down
    with hold_run_dir(cfg.run_dir) as holder:  # rank 0, before any checkpoint is read
        world = setup(cfg.device)
        try:
            rank_batch(cfg.batch_size, world.world_size)  # a batch that does not divide: before any work
            with failfast.guard(world, cfg):  # a failed or hung rank ends every rank, naming it
                return Trainer(cfg, world, holder=holder, manifest=manifest).fit()
        finally:
            teardown(world)


class Trainer:
    def __init__(self, cfg: TrainConfig, world: World, holder: dict | None = None,
                 on_step: Callable[[RunState], None] | None = None, manifest: Manifest | None = None):
        self.cfg, self.world = cfg, world
        self.on_step = on_step  # after each step, on every rank: benchmarks/train_bench.py's clock
        self.device = world.device
        self.precision = run_precision(cfg.amp, cfg.channels_last, self.device)  # `trainer evaluate`'s too
        self.amp, self.channels_last = self.precision.bf16, self.precision.channels_last
        self.per_rank_batch = rank_batch(cfg.batch_size, world.world_size)
        self.compile = compile_enabled(cfg.compile, self.device)
        self.ckdir = CheckpointDir(cfg.run_dir, cfg.keep_checkpoints)
        self.manifest = manifest = manifest or Manifest.read(cfg.data)
        self.class_digest = manifest.class_digest
        first = start_line(cfg, self.ckdir, manifest)  # said once resume's refusals had their say
        if world.is_main:
            for p in self.ckdir.sweep():
                self.say(f"trainer: removed {p.name}, left in {p.parent} by a writer that is gone")
        self.fallbacks: list[tuple[str, str]] = []  # (damaged checkpoint, why) passed over on resume
        self.build_model()
        self.state, ckpt = self.resume()
        self.say(first)
        self.train_loader = self.make_loader("train", "train")
        self.val_loaders: dict[str, object] = {}
        self.steps_per_epoch = len(self.train_loader)
        if self.steps_per_epoch == 0:
            raise TrainError(f"{cfg.data} has fewer train samples per rank than one batch of {self.per_rank_batch}")
        self.session = Session(cfg, world, self.state, ckpt, self.ckdir, steps_per_epoch=self.steps_per_epoch,
                               holder=holder) if world.is_main else None
        if self.session and self.state.forked_from:
            fork.record_parent(self.session, self.state, ckpt)
        if self.session and self.transfer:
            self.session.event(0, "init_from", self.transfer.event())
        if self.session and self.fallbacks:
            self.session.event(self.state.step, "checkpoint_fallback", {
                "skipped": [{"path": p, "reason": why} for p, why in self.fallbacks],
                "resumed_from": self.state.resumed_from})
        replays = self.session.replays if self.session else []
        self.control = Control(world, self.session.store if self.session else None,
                               self.session.run_id if self.session else None,
                               checkpoint_seconds=cfg.checkpoint_minutes * 60, replays=replays,
                               min_lr=cfg.min_lr, included={c["id"] for c in self.state.applied_commands},
                               every=cfg.control_every)
        self.control.install_signal_handlers()
        # Dropout's RNG (and any other) continues exactly where the checkpoint left it.
        if ckpt is not None and world.rank < len(ckpt["rng"]):
            set_rng_state(ckpt["rng"][world.rank])
        else:
            torch.manual_seed(cfg.seed * 1000 + world.rank + 1)
        self.data_state = ckpt["data_state"][world.rank] if ckpt and self.state.epoch_step else None

    # -- setup ---------------------------------------------------------------------------
    def build_model(self) -> None:
        cfg = self.cfg
        torch.manual_seed(cfg.seed)  # the same initial weights on every rank
        fmt = torch.channels_last if self.channels_last else torch.contiguous_format
        if self.device.type == "cuda":
            configure_cuda()
        self.model = build_model(cfg)
        self.transfer = self.init_from() if cfg.init_from else None
        if cfg.freeze_features:
            freeze_features(self.model)
        self.model = self.model.to(self.device, memory_format=fmt)
        self.optimizer = create_optimizer(cfg.optimizer, self.model.parameters(), lr=cfg.lr,
                                          momentum=cfg.momentum, weight_decay=cfg.weight_decay,
                                          fused=self.compile)
        self.policy = LRPolicy(cfg.lr_policy, cfg.lr_factor, cfg.patience, cfg.max_drops, cfg.step_epochs,
                               cfg.plateau_threshold)
        net = self.model
        if self.world.distributed:
            net = wrap_ddp(net, self.device, grad_bf16=cfg.grad_bf16)
        self.net = compile_net(net, self.compile)
        self.step = TrainStep(self.net, self.optimizer, self.device, self.amp, self.channels_last)

    def resume(self) -> tuple[RunState, dict | None]:
        cfg = self.cfg
        ckpt, path, self.fallbacks = choose_checkpoint(cfg, self.ckdir, self.class_digest, say=self.say)
        if ckpt is None:
            lr, why = initial_lr(cfg)
            set_lr(self.optimizer, lr)
            return RunState(lr=lr, lr_history=[{"step": 0, "lr": lr, "reason": why}]), None
        state = restore(ckpt, path, cfg, self.model, self.optimizer, self.policy)
        if cfg.fork_from and str(path) == cfg.fork_from:
            fork.start(state, self.optimizer, cfg)
        return state, ckpt

    def init_from(self):
        """Another run's weights, for a run that starts here (a resumed one has its own)."""
        cfg = self.cfg
        if cfg.resume not in ("auto", "never") or (cfg.resume == "auto" and self.ckdir.latest() is not None):
            return None
        done = transfer(self.model, cfg.init_from, self.class_digest, warn=self.say)
        self.say(done.line())
        return done

    def say(self, line: str) -> None:
        if self.world.is_main:
            print(line, flush=True)

    def make_loader(self, split: str, mode: str):
        from pipeline import make_loader

        return make_loader(train_loader_config(self.cfg, self.world, split, mode, self.channels_last, self.manifest))

    # -- the loop ------------------------------------------------------------------------
    def fit(self) -> int:
        self.begin()
        try:
            return self.finish(self.run_epochs())
        except BaseException as e:
            if self.session:
                self.session.fail(self.state, f"{type(e).__name__}: {e}")
            raise
        finally:
            self.progress.close()
            if self.trace:
                self.trace.close(self.model)

    def run_epochs(self) -> str:
        """Epochs (the rest of one first, after a resume) until the run ends.
        Returns epochs | stop | max_steps | nan."""
        cfg, st = self.cfg, self.state
        while st.epoch < cfg.epochs:
            outcome = self.train_epoch()
            if outcome != "epoch":
                return outcome
            st.epoch += 1
            st.epoch_step = 0
            if not self.end_of_epoch():
                return "nan"
        return "epochs"

    def begin(self) -> None:
        cfg, st = self.cfg, self.state
        self.total_steps = min(cfg.max_steps or 10**12, cfg.epochs * self.steps_per_epoch)
        self.meter = Meter(cfg.batch_size)
        self.progress = Progress(total_steps=self.total_steps, start_step=st.step, enabled=self.world.is_main)
        self.trace = StepTrace(cfg.trace, self.world.rank) if cfg.trace else None
        self.losses = LossTally(self.device)
        self.compiler = RunCompile(self.compile, say=self.progress.write, mark=self.mark_compiling,
                                   event=self.run_event)
        self.warmup = Warmup.of(cfg, self.steps_per_epoch)
        self.say(layout.start_line(cfg, self.world))
        if st.resumed_from:
            self.progress.write(f"resumed from {st.resumed_from} at step {st.step} (epoch {st.epoch}, "
                                f"batch {st.epoch_step}/{self.steps_per_epoch})")

    def train_epoch(self) -> str:
        """One epoch (or its rest, after a resume). Returns epoch | stop | max_steps | nan."""
        cfg, st = self.cfg, self.state
        self.train_loader.set_epoch(st.epoch)
        if self.data_state is not None:
            self.train_loader.load_state_dict(self.data_state)  # continue after the last batch consumed
            self.data_state = None
        batches = iter(self.train_loader)
        self.net.train()
        while st.epoch_step < self.steps_per_epoch:
            # A step boundary: operator commands, stop requests, timed checkpoints.
            decision = self.control.exchange(st.step, st.lr)
            if decision.new_lr is not None:
                self.change_lr(decision.new_lr, "operator", decision)
            if decision.stop:
                return "stop"
            if cfg.max_steps and st.step >= cfg.max_steps:
                return "max_steps"
            if decision.checkpoint and not self.checkpoint():
                return "nan"
            t0 = time.perf_counter()
            # The loader may draw from torch's global RNG (DataLoader seeds); forking keeps
            # dropout's stream independent of when iteration starts, so a resumed epoch
            # continues it exactly.
            with torch.random.fork_rng(devices=[]):
                images, labels = next(batches)
            self.warmup.apply(self.optimizer, st.step, st.lr)
            self.meter.add(time.perf_counter() - t0)
            if self.compiler.pending:  # the step that waits for torch.compile, shown as it goes
                self.losses.add(self.compiler.first_step(self.step, images, labels))
            else:
                self.losses.add(self.step(images, labels))  # read back per log interval (sync_loss)
            st.step += 1
            st.epoch_step += 1
            if self.trace:
                self.trace.step(st, images, labels)
            if self.on_step:
                self.on_step(st)
            if cfg.step_delay:
                time.sleep(cfg.step_delay)
            # On the CPU every loss is already on the host; on a GPU read it back only per
            # log interval, so the host keeps queueing work ahead of the device. Under DDP
            # it is a collective: per log interval too, so that DDP's are the step's only.
            if (self.device.type == "cpu" and not self.world.distributed) or st.step % cfg.log_every == 0:
                if not self.sync_loss():
                    return "nan"
            self.report()
        return "epoch"

    def mark_compiling(self, since: float | None) -> None:
        if self.session:
            self.session.reporter.compiling(since)
            self.report(force=True)

    def run_event(self, kind: str, payload: dict) -> None:
        if self.session:
            self.session.event(self.state.step, kind, payload)

    def sync_loss(self, check_params: bool = False) -> bool:
        """Mean loss since the last call over all ranks; False (and stop) if it is not finite.
        Before a checkpoint the weights are checked too: a finite loss can precede an
        update that overflows, and such weights must never replace the last good file."""
        st = self.state
        if self.losses.count == 0 and not check_params:
            return True
        loss, had_steps = self.losses.take(self.world, self.model if check_params else None)
        if not math.isfinite(loss):
            self.last_loss = loss
            return False
        if not had_steps:
            return True
        self.last_loss = loss
        if st.step % self.cfg.log_every == 0:
            self.meter.close_interval()
            if self.session:
                self.session.reporter.interval(st.step, self.epoch_float(), loss=loss, lr=st.lr,
                                               meter=self.meter, images_seen=st.step * self.cfg.batch_size)
        return True

    def report(self, force: bool = False) -> None:
        st = self.state
        eta = (self.total_steps - st.step) * self.meter.step_seconds
        loss = getattr(self, "last_loss", None)
        self.progress.update(st.step, epoch=self.epoch_float(), loss=loss, lr=st.lr, meter=self.meter, eta_s=eta)
        if self.session:
            self.session.reporter.progress(st.step, self.epoch_float(), lr=st.lr, meter=self.meter, eta_s=eta,
                                           images_seen=st.step * self.cfg.batch_size, force=force)

    def epoch_float(self) -> float:
        return self.state.epoch + self.state.epoch_step / self.steps_per_epoch

    def change_lr(self, new_lr: float, reason: str, decision=None) -> None:
        st = self.state
        old = st.lr
        set_lr(self.optimizer, new_lr)
        st.lr = new_lr
        entry = {"step": st.step, "lr": new_lr, "reason": reason}
        if decision is not None and self.session:
            applied = self.control.record(decision, st.step, old)
            st.applied_commands.extend(applied)
            entry["command_ids"] = [c["id"] for c in applied]
        elif self.session:
            self.session.event(st.step, "lr_change", {"old_lr": old, "new_lr": new_lr, "reason": reason,
                                                       "policy": self.cfg.lr_policy})
            self.report(force=True)  # runs.lr now, not up to a second later: the server's LR floor reads it
        st.lr_history.append(entry)
        self.progress.write(f"step {st.step}: learning rate {old:.3g} -> {new_lr:.3g} ({reason})")

    # -- epoch ends, checkpoints, the end ------------------------------------------------
    def end_of_epoch(self) -> bool:
        """Validation, the LR policy, the epoch checkpoint. False if the loss went bad."""
        cfg, st = self.cfg, self.state
        val = self.validate("center") if cfg.val_every and st.epoch % cfg.val_every == 0 else None
        reason = self.policy.after_epoch(st.epoch, val["top1_error"] if val else None)
        if reason:
            self.change_lr(st.lr / cfg.lr_factor, reason)
        return self.checkpoint(epoch_end=st.epoch)

    def validate(self, mode: str) -> dict:
        if mode not in self.val_loaders:
            self.val_loaders[mode] = self.make_loader("val", mode)
        with torch.random.fork_rng(devices=[]):  # evaluation leaves the training RNG untouched
            result = evaluate_loader(self.model, self.val_loaders[mode], self.device, view=mode,
                                     group=self.world.control_group, precision=self.precision)
        self.last_val_step = self.state.step
        if self.session:
            self.session.evaluation(self.state, self.epoch_float(), mode, result)
        self.progress.write(f"epoch {self.epoch_float():.2f} step {self.state.step}: validation ({mode}) "
                            f"top-1 error {result['top1_error']:.4f}, top-5 error {result['top5_error']:.4f} "
                            f"on {result['count']} images")
        return result

    def checkpoint(self, epoch_end: int | None = None) -> bool:
        """Every rank: check the loss, gather RNG states and data positions; rank 0 writes."""
        st = self.state
        if not self.sync_loss(check_params=True):
            return False
        rngs = all_gather_object(self.world, rng_state())
        data = all_gather_object(self.world, self.train_loader.state_dict() if st.epoch_step else None)
        if self.session:
            self.session.save_checkpoint(model=self.model, optimizer=self.optimizer, policy=self.policy,
                                         state=st, rngs=rngs, data_states=data, epoch_end=epoch_end,
                                         class_digest=self.class_digest)
        st.last_saved_step = st.step  # on every rank: finish() decides on it collectively
        self.control.checkpoint_written()
        return True

    def finish(self, outcome: str) -> int:
        st, session = self.state, self.session
        self.compiler.check()
        self.report(force=True)
        if outcome in ("stop", "max_steps", "epochs") and st.last_saved_step != st.step:
            if not self.checkpoint():
                outcome = "nan"
        if outcome == "nan":
            loss = getattr(self, "last_loss", float("nan"))
            last = self.ckdir.latest()
            if session:
                session.event(st.step, "nan_loss", {"loss": loss, "last_checkpoint": str(last) if last else None})
                session.finish("failed")
            self.progress.write(f"trainer: loss is {loss} at step {st.step}: stopped; the last good checkpoint "
                                f"is {last or 'none'}")
            return 1
        if outcome == "stop":
            if session:
                session.finish("stopped")
            self.progress.write(f"trainer: stopped by {self.control.stop_reason or 'a signal on another rank'} "
                                f"at step {st.step}; checkpoint {self.ckdir.last}; continue with --resume auto")
            return 0
        if self.cfg.val_every and getattr(self, "last_val_step", -1) != st.step:
            self.validate("center")
        if self.cfg.tencrop:
            self.validate("tencrop")
        if session:
            session.finish("finished")
        self.progress.write(f"trainer: finished at step {st.step} (epoch {self.epoch_float():.2f}); "
                            f"checkpoint {self.ckdir.last}")
        return 0

