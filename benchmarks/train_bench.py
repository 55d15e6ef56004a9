"""What `trainer train`'s loop costs over a bare loop: `python benchmarks/train_bench.py`.

Both loops train the same AlexNet with the same optimizer, batch size, AMP/channels-last
settings and thread count, in the same process, alternating, best of `--repeats`:
  bare:    one batch already in memory (on the device), forward/backward/step, nothing else;
  trainer: `trainer.train.Trainer` itself on real shards: the loader (reference on CPU,
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
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402


def demo_shards(workdir: Path, per_class: int) -> Path:
    from preprocess import democorpus
    from preprocess.cli import main

    corpus = democorpus.build(workdir / "corpus", democorpus.CorpusSpec(10, per_class, 2, seed=0))
    out = workdir / "shards"
    assert main(["shard", "--src", str(corpus), "--out", str(out), "--synsets",
                 str(corpus / democorpus.SYNSETS_NAME), "--workers", "2", "--progress", "off"]) == 0
    return out


def make_trainer(args, data: Path, run_dir: Path, max_steps: int):
    from trainer.config import TrainConfig
    from trainer.distributed import setup
    from trainer.train import Trainer, check_inputs

    cfg = TrainConfig(data=str(data), run_dir=str(run_dir), width=args.width, batch_size=args.batch_size,
                      max_steps=max_steps, epochs=10**6, device=args.device, num_workers=args.workers,
                      val_every=0, tencrop=False, checkpoint_minutes=10**6, log_every=args.log_every,
                      resume="never")
    return Trainer(check_inputs(cfg), setup(args.device))


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


def time_trainer(args, data: Path, run_dir: Path, in_memory: bool = False) -> tuple[float, float]:
    """(images/s, data-wait fraction) of the trainer's loop over steps warmup+1 .. warmup+steps."""
    trainer = make_trainer(args, data, run_dir, args.warmup + args.steps)
    if in_memory:
        trainer.train_loader = InMemory(trainer.train_loader)
    marks, step = {}, trainer.train_step

    def timed_step(images, labels):
        loss = step(images, labels)
        n = trainer.state.step + 1
        if n in (args.warmup, args.warmup + args.steps):
            if trainer.device.type == "cuda":
                torch.cuda.synchronize()
            marks[n] = time.perf_counter()
        return loss

    trainer.train_step = timed_step
    trainer.begin()
    trainer.progress.enabled = False  # the table below is the output
    while trainer.train_epoch() == "epoch":
        trainer.state.epoch += 1
        trainer.state.epoch_step = 0
    trainer.session.finish("finished")
    return args.steps * args.batch_size / (marks[args.warmup + args.steps] - marks[args.warmup]), \
        trainer.meter.data_wait_frac


def time_bare(args, num_classes: int) -> float:
    from trainer.model import AlexNet
    from trainer.optim import PaperSGD

    device = torch.device(args.device)
    gpu = device.type == "cuda"
    fmt = torch.channels_last if gpu else torch.contiguous_format
    torch.manual_seed(0)
    model = AlexNet(num_classes=num_classes, width=args.width).to(device, memory_format=fmt)
    opt = PaperSGD(model.parameters(), lr=0.01)
    x = torch.randn(args.batch_size, 3, 224, 224, device=device).contiguous(memory_format=fmt)
    y = torch.randint(0, num_classes, (args.batch_size,), device=device)
    for i in range(args.warmup + args.steps):
        if i == args.warmup:
            if gpu:
                torch.cuda.synchronize()
            t0 = time.perf_counter()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=gpu):
            logits = model(x)
        loss = F.cross_entropy(logits.float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    if gpu:
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
    args = p.parse_args()
    if args.device == "cpu":
        # The loader's workers get their own cores; the step gets the rest (the same in both loops).
        torch.set_num_threads(max(1, (os.cpu_count() or 2) - args.workers))
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        per_class = max(16, (args.warmup + args.steps) * args.batch_size // 10 + 8)
        data = args.data or demo_shards(tmp, per_class)
        from preprocess.contract import load_manifest

        num_classes = len(load_manifest(data)["classes"])
        bare, loop, mem, wait = [], [], [], []
        for r in range(args.repeats):
            bare.append(time_bare(args, num_classes))
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
