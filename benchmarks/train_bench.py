"""What `trainer train`'s loop costs over a bare loop: `python benchmarks/train_bench.py`.

Both loops train the same AlexNet with the same optimizer, batch size, AMP/channels-last
settings and thread count, in the same process, alternating, best of `--repeats`:
  bare:    the trainer's own step (`trainer.run.step.TrainStep`) on one batch already in memory
           (on the device), nothing else;
  trainer: `trainer.run.train.Trainer.fit` itself on real shards: the loader (reference on CPU,
           DALI on GPU), control exchange, loss read-back, metrics, progress and run store.
  no-data: the trainer's loop with its loader swapped for the same batch repeated: what
           control, metrics and the run store cost without the data path.
The ratio trainer/bare is the loop's efficiency (higher is better; target >= 0.95).
Each repeat times the three loops back to back, so each repeat gives its own ratios; their
spread (min-max) is printed and put in the JSON beside the best-of ratios. The data-wait
fraction reported is the one of the trainer run whose throughput is reported.
Without --data a small demo corpus is built and sharded in a temporary directory.
Prints a table, then one JSON line last.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402


def demo_shards(workdir: Path, per_class: int) -> Path:
    from preprocess import democorpus
    from preprocess.cli import main

    corpus = democorpus.build(workdir / "corpus", democorpus.CorpusSpec(10, per_class, 2, seed=0))
    out = workdir / "shards"
    assert main(["shard", "--src", str(corpus), "--out", str(out), "--synsets",
                 str(corpus / democorpus.SYNSETS_NAME), "--workers", "2", "--progress", "off"]) == 0
    return out


def train_config(args, data: Path, run_dir: Path, max_steps: int):
    """The config both loops run: the bare loop builds its model, optimizer and step from it too."""
    from trainer.run.config import TrainConfig

    return TrainConfig(data=str(data), run_dir=str(run_dir), width=args.width, batch_size=args.batch_size,
                       max_steps=max_steps, epochs=10**6, device=args.device, num_workers=args.workers,
                       val_every=0, tencrop=False, checkpoint_minutes=10**6, log_every=args.log_every,
                       resume="never", compile=args.compile)


class InMemory:
    """The trainer's loader replaced by one batch repeated: the loop without data costs."""

    def __init__(self, loader):
        self.n = len(loader)
        self.batch = next(iter(loader))

    def __len__(self):
        return self.n

    def __iter__(self):
        return (self.batch for _ in range(self.n))

    def set_epoch(self, epoch):
        pass

    def state_dict(self):
        return {}


class Clock:
    """The Trainer's step hook: the wall time after step `start` and after step `end`, the
    device caught up at each, so the window holds steps start+1 .. end."""

    def __init__(self, device: str, start: int, end: int):
        self.cuda, self.start, self.end = device.startswith("cuda"), start, end
        self.marks: dict[int, float] = {}

    def __call__(self, state) -> None:
        if state.step in (self.start, self.end):
            if self.cuda:
                torch.cuda.synchronize()
            self.marks[state.step] = time.perf_counter()

    def seconds(self) -> float:
        return self.marks[self.end] - self.marks[self.start]


def time_trainer(args, data: Path, run_dir: Path, in_memory: bool = False) -> tuple[float, float]:
    """(images/s, data-wait fraction) of `Trainer.fit` over steps warmup+1 .. warmup+steps;
    the run then ends as any run that reaches --max-steps does (a checkpoint, after the clock)."""
    from trainer.run.distributed import setup
    from trainer.run.train import Trainer, check_inputs

    clock = Clock(args.device, args.warmup, args.warmup + args.steps)
    cfg = check_inputs(train_config(args, data, run_dir, args.warmup + args.steps))
    trainer = Trainer(cfg, setup(args.device), on_step=clock)
    if in_memory:
        trainer.train_loader = InMemory(trainer.train_loader)
    said = io.StringIO()  # the trainer's progress lines: the table below is the output
    try:
        with contextlib.redirect_stdout(said), contextlib.redirect_stderr(said):
            code = trainer.fit()
    except BaseException:
        sys.stderr.write(said.getvalue())
        raise
    if code != 0:
        raise RuntimeError(f"the trainer ended with exit status {code}:\n{said.getvalue()[-2000:]}")
    return args.steps * args.batch_size / clock.seconds(), trainer.meter.data_wait_frac


def time_bare(args, cfg) -> float:
    """The product's step (`trainer.run.step.TrainStep`) on the model and optimizer that `cfg`
    makes, with the Trainer's AMP, channels-last and compile rules, on one batch already on
    the device (the warmup steps hold the compile)."""
    from trainer.run.compiled import compile_enabled, compile_net
    from trainer.run.model import build_model, configure_cuda
    from trainer.run.optim import create_optimizer
    from trainer.run.step import TrainStep
    from trainer.run.validation import run_precision

    device = torch.device(args.device)
    precision = run_precision(cfg.amp, cfg.channels_last, device)
    amp, channels_last = precision.bf16, precision.channels_last
    compiled = compile_enabled(cfg.compile, device)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    if device.type == "cuda":
        configure_cuda()
    torch.manual_seed(cfg.seed)
    model = build_model(cfg).to(device, memory_format=fmt)
    optimizer = create_optimizer(cfg.optimizer, model.parameters(), lr=cfg.lr, momentum=cfg.momentum,
                                 weight_decay=cfg.weight_decay, fused=compiled)
    step = TrainStep(compile_net(model.train(), compiled), optimizer, device, amp, channels_last)
    x = torch.randn(args.batch_size, 3, 224, 224, device=device).contiguous(memory_format=fmt)
    y = torch.randint(0, cfg.num_classes, (args.batch_size,), device=device)
    for i in range(args.warmup + args.steps):
        if i == args.warmup:
            if device.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
        step(x, y)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return args.steps * args.batch_size / (time.perf_counter() - t0)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    gpu = torch.cuda.is_available()
    p.add_argument("--data", type=Path, help="shards (default: a demo corpus built in a temp dir)")
    p.add_argument("--device", default="cuda" if gpu else "cpu")
    p.add_argument("--width", type=float, default=1.0 if gpu else 0.25)
    p.add_argument("--batch-size", type=int, default=128 if gpu else 32)
    # Enough timed CPU steps that the ratios hold from run to run (benchmarks/README.md).
    p.add_argument("--steps", type=int, default=200 if gpu else 48)
    p.add_argument("--warmup", type=int, default=20 if gpu else 3)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--workers", type=int, default=4 if gpu else 1)
    p.add_argument("--log-every", type=int, default=20 if gpu else 2)
    p.add_argument("--compile", choices=("auto", "on", "off"), default="auto",
                   help="both loops, as trainer train's --compile (auto: on CUDA)")
    args = p.parse_args()
    if args.device == "cpu":
        # The loader's workers get their own cores; the step gets the rest (the same in both loops).
        torch.set_num_threads(max(1, (os.cpu_count() or 2) - args.workers))
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        per_class = max(16, (args.warmup + args.steps) * args.batch_size // 10 + 8)
        data = args.data or demo_shards(tmp, per_class)
        from trainer.run.train import check_inputs

        bare_cfg = check_inputs(train_config(args, data, tmp / "runs" / "bare", 0))  # the class count
        bare, loop, mem, wait = [], [], [], []
        for r in range(args.repeats):
            bare.append(time_bare(args, bare_cfg))
            ips, w = time_trainer(args, data, tmp / "runs" / f"bench{r}")
            loop.append(ips)
            wait.append(w)
            mem.append(time_trainer(args, data, tmp / "runs" / f"mem{r}", in_memory=True)[0])
    best_bare, best_loop, best_mem = max(bare), max(loop), max(mem)
    wait_of_best = wait[loop.index(best_loop)]  # from the same run as the throughput reported
    pair_loop = [t / b for t, b in zip(loop, bare)]  # each repeat's own ratios
    pair_mem = [m / b for m, b in zip(mem, bare)]
    machine = {"host": platform.node(), "cpus": os.cpu_count(), "torch": torch.__version__,
               "device": torch.cuda.get_device_name() if args.device == "cuda" else "cpu",
               "torch_threads": torch.get_num_threads(), "note": "shared, noisy machine: compare ratios"}
    print(f"{'loop':<10}{'images/s (best)':>18}{'all runs':>30}")
    print(f"{'bare':<10}{best_bare:>18.1f}{', '.join(f'{v:.1f}' for v in bare):>30}")
    print(f"{'trainer':<10}{best_loop:>18.1f}{', '.join(f'{v:.1f}' for v in loop):>30}")
    print(f"{'no-data':<10}{best_mem:>18.1f}{', '.join(f'{v:.1f}' for v in mem):>30}  (trainer loop, batch in memory)")
    print(f"data wait in the trainer loop: {', '.join(f'{v:.1%}' for v in wait)} "
          f"(of the best trainer run: {wait_of_best:.1%})")
    print(f"trainer/bare = {best_loop / best_bare:.3f} (width {args.width}, batch {args.batch_size}, "
          f"{args.device}, {args.steps} timed steps)")
    print(f"per repeat: trainer/bare {', '.join(f'{v:.3f}' for v in pair_loop)}; "
          f"no-data/bare {', '.join(f'{v:.3f}' for v in pair_mem)}")
    print(json.dumps({"bench": "train_loop", "machine": machine,
                      "figures": {"bare_images_per_sec": round(best_bare, 2),
                                  "trainer_images_per_sec": round(best_loop, 2),
                                  "trainer_in_memory_images_per_sec": round(best_mem, 2),
                                  "trainer_data_wait_frac": round(wait_of_best, 4),
                                  "width": args.width, "batch_size": args.batch_size, "steps": args.steps,
                                  "compile": args.compile,
                                  "repeats": args.repeats},
                      "ratios": {"trainer_over_bare": round(best_loop / best_bare, 4),
                                 "trainer_in_memory_over_bare": round(best_mem / best_bare, 4),
                                 "trainer_over_bare_min": round(min(pair_loop), 4),
                                 "trainer_over_bare_max": round(max(pair_loop), 4),
                                 "trainer_in_memory_over_bare_min": round(min(pair_mem), 4),
                                 "trainer_in_memory_over_bare_max": round(max(pair_mem), 4)}}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
