"""PaperSGD's update, fused (one compiled pass) against today's four `_foreach` passes:
`python benchmarks/optim_bench.py [--device cpu|cuda] [--steps 20] [--repeats 3]`.

Both update the full-size AlexNet's parameter set (61 M parameters, float32) with the same
gradients, in the same process, alternating, best of `--repeats`; the fused form's first
call (the compile) is timed apart. Prints a table, then one JSON line last.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from trainer.run.model import AlexNet  # noqa: E402
from trainer.run.optim import PaperSGD  # noqa: E402


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _optimizer(device: torch.device, fused: bool) -> PaperSGD:
    torch.manual_seed(0)
    params = list(AlexNet(num_classes=1000).to(device).parameters())
    for p in params:
        p.grad = torch.randn_like(p) * 1e-3
    return PaperSGD(params, lr=0.01, fused=fused)


def _per_step(opt: PaperSGD, steps: int, device: torch.device) -> float:
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        opt.step()
    _sync(device)
    return (time.perf_counter() - t0) / steps


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)
    device = torch.device(args.device)
    eager, fused = _optimizer(device, False), _optimizer(device, True)
    n = sum(p.numel() for g in eager.param_groups for p in g["params"])
    _per_step(eager, 1, device)
    t0 = time.perf_counter()
    _per_step(fused, 1, device)  # the compile
    compile_s = time.perf_counter() - t0
    best = {"eager": float("inf"), "fused": float("inf")}
    for _ in range(args.repeats):
        best["eager"] = min(best["eager"], _per_step(eager, args.steps, device))
        best["fused"] = min(best["fused"], _per_step(fused, args.steps, device))
    result = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "cpus": os.cpu_count(), "threads": torch.get_num_threads(), "torch": torch.__version__,
        "parameters": n, "steps": args.steps, "repeats": args.repeats,
        "eager_ms": round(best["eager"] * 1e3, 3), "fused_ms": round(best["fused"] * 1e3, 3),
        "speedup": round(best["eager"] / best["fused"], 2), "fused_compile_s": round(compile_s, 1),
    }
    print(f"PaperSGD update, {n / 1e6:.1f} M parameters on {device} ({result['threads']} threads), "
          f"best of {args.repeats} x {args.steps} steps")
    print(f"  today's (4 _foreach passes): {result['eager_ms']:9.2f} ms/step")
    print(f"  fused (one compiled pass):   {result['fused_ms']:9.2f} ms/step   "
          f"(compile {result['fused_compile_s']} s)")
    print(f"  ratio today/fused: {result['speedup']:.2f}x")
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
