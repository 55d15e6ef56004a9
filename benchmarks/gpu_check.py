"""The GPU check: environment, GPU-path correctness, and the pipeline's and trainer's
throughput, in one process (run by `benchmarks/gpu_check.sh`, which sets up imports).

    python benchmarks/gpu_check.py --out DIR [--dry-run] [--budget SECONDS]

Steps run in order of value (`gpu/steps.py`); each one that cannot run (a missing import,
the time budget) or fails is recorded with its reason and the rest go on, so one call on a
lent GPU always brings back every figure it could take. Each step's record is written to
DIR/steps/NN_name.json the moment it ends, and DIR/gpu_check.json is rewritten after it;
a table is printed last. `--budget` is the seconds this process may take: a step whose
estimate does not fit in what is left is skipped.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import traceback
from dataclasses import asdict, dataclass, replace
from pathlib import Path

HERE = Path(__file__).resolve().parent
# gpu/ (this check's modules), the repo root (preprocess, pipeline, trainer) and the
# pipeline tests' shard writer, whose labels name their samples (the correctness check).
for p in (HERE, HERE.parent, HERE.parent / "tests" / "pipeline"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

from gpu import env, report  # noqa: E402
from gpu.timing import Budget  # noqa: E402


@dataclass(frozen=True)
class Plan:
    """Sizes and budgets; GPU sizes from the issue, dry-run sizes small enough for ~1 min."""

    device: str
    classes: int
    train_per_class: int
    val_per_class: int
    shard_max_count: int
    dali_batch: int
    dali_threads: int
    ref_batch: int
    ref_workers: int
    train_batch: int
    width: float
    amp: bool
    channels_last: bool
    loss_steps: int
    profile_steps: int
    trainer_steps: int  # benchmarks/train_bench.py's timed steps, after trainer_warmup
    trainer_warmup: int
    check_sizes: tuple  # train shard sizes of the correctness check's synthetic dataset
    check_batch: int
    decode_batch: int
    dali_levers: tuple  # (threads, hw_decoder_load) pairs measured beside the product's
    fed_hw_loads: tuple  # the fed-training levers (gpu/fedlevers.py): hw_decoder_load values,
    fed_threads: tuple  # DALI threads,
    fed_depths: tuple  # and the loader's prefetch depths, each beside the product's
    fed_lever_s: float  # seconds of fed training a setting
    pipe_budget: Budget
    bare_budget: Budget
    lever_budget: Budget
    fed_budget: Budget
    decode_budget: Budget
    deadline_s: float  # steps whose estimate does not fit in what is left are skipped


def gpu_plan(cpus: int) -> Plan:
    from pipeline.loader import auto_workers  # the trainer's default DALI threads on this host

    return Plan(
        device="cuda", classes=40, train_per_class=512, val_per_class=2, shard_max_count=1000,
        dali_batch=256, dali_threads=auto_workers("dali", "cuda"), ref_batch=256, ref_workers=min(16, cpus),
        train_batch=128, width=1.0, amp=True, channels_last=True, loss_steps=80, profile_steps=10,
        trainer_steps=120, trainer_warmup=20,
        check_sizes=(96, 96), check_batch=64, decode_batch=256,
        dali_levers=((4, 0.65), (8, 0.9), (8, 1.0), (16, 0.65)),
        fed_hw_loads=(0.65, 0.9, 1.0), fed_threads=(4, 16), fed_depths=(0, 2), fed_lever_s=5.0,
        pipe_budget=Budget(0, 6.0, 10**6), bare_budget=Budget(20, 6.0, 10**6), lever_budget=Budget(10, 4.0, 10**6),
        fed_budget=Budget(10, 12.0, 10**6), decode_budget=Budget(3, 4.0, 10**6), deadline_s=450,
    )


def dry_plan(cpus: int) -> Plan:
    return Plan(
        device="cpu", classes=4, train_per_class=16, val_per_class=2, shard_max_count=32,
        dali_batch=8, dali_threads=2, ref_batch=8, ref_workers=2,
        train_batch=4, width=0.0625, amp=False, channels_last=True, loss_steps=24, profile_steps=2,
        trainer_steps=3, trainer_warmup=1,
        check_sizes=(12, 12), check_batch=8, decode_batch=8, dali_levers=((1, 0.9),),
        fed_hw_loads=(0.9,), fed_threads=(1,), fed_depths=(0,), fed_lever_s=0.2,
        pipe_budget=Budget(0, 0.3, 6), bare_budget=Budget(1, 0.2, 3), lever_budget=Budget(1, 0.1, 2),
        fed_budget=Budget(1, 0.2, 3), decode_budget=Budget(1, 0.2, 3), deadline_s=300,
    )


class Check:
    def __init__(self, plan: Plan, out: Path, work: Path, dry_run: bool):
        self.plan, self.out, self.work, self.dry_run = plan, out, work, dry_run
        self.t_start = time.perf_counter()
        self.stopped = False
        # GPU_CHECK_ONLY=data,trainer_loop reruns chosen steps on a second call (name the steps
        # they come after too); the others are recorded as skipped.
        self.only = {n for n in os.environ.get("GPU_CHECK_ONLY", "").split(",") if n}
        self.modules = env.module_status()
        self.report = {"bench": "gpu_check", "dry_run": dry_run, "machine": env.machine(),
                       "modules": self.modules, "plan": _jsonable(asdict(plan)), "data": {},
                       "correctness": {}, "measurements": {}, "figures": {}, "steps": {}}

    def log(self, text: str) -> None:
        print(text, flush=True)

    def has(self, *names: str) -> str | None:
        """None when every import works, else the reason the step cannot run."""
        missing = [n for n in names if not env.available(self.modules, n)]
        return f"missing: {', '.join(missing)}" if missing else None

    def skip(self, name: str, reason: str) -> None:
        self.report["steps"][name] = {"status": "skipped", "reason": reason}
        self.log(f"== {name}: skipped ({reason})")
        self.save_step(name, self.report["steps"][name], None)

    def step(self, name: str, fn, needs=(), estimate_s: float = 0.0, after=()):
        """Run one step; record ok/skipped/error, its seconds and the reason."""
        reason = "stopped: an earlier step was interrupted" if self.stopped else self.has(*needs)
        if self.only and name not in self.only:
            reason = "not in GPU_CHECK_ONLY"
        for dep in after:
            if self.report["steps"].get(dep, {}).get("status") != "ok":
                reason = reason or f"needs step {dep}, which did not run"
        left = self.plan.deadline_s - (time.perf_counter() - self.t_start)
        if reason is None and estimate_s > left:
            reason = f"time budget: {left:.0f} s left, step needs ~{estimate_s:.0f} s"
        if reason:
            self.skip(name, reason)
            return None
        self.log(f"== {name}")
        t0 = time.perf_counter()
        try:
            result = fn()
            status = {"status": "ok"}
        except Exception as exc:  # one broken step must not cost the others' figures
            self.log(traceback.format_exc())
            result, status = None, {"status": "error", "reason": f"{type(exc).__name__}: {exc}"[:400]}
        except KeyboardInterrupt:  # gpu_check.sh's time limit (SIGINT): report what we have
            self.log(traceback.format_exc())
            self.stopped = True
            result, status = None, {"status": "error", "reason": "interrupted (the script's time limit)"}
        status["seconds"] = round(time.perf_counter() - t0, 2)
        self.report["steps"][name] = status
        if result is not None:
            self.log(json.dumps(result, default=str)[:1500])
        self.save_step(name, status, result)
        self.save()  # after every step: a call cut off at its limit still brings figures back
        return result

    def save_step(self, name: str, status: dict, result) -> None:
        """The step's own record, DIR/steps/NN_name.json, written once, when it ends."""
        folder = self.out / "steps"
        folder.mkdir(exist_ok=True)
        number = len(self.report["steps"])
        record = {"step": name, **status, "elapsed_s": round(time.perf_counter() - self.t_start, 1),
                  "result": result, "figures": self.report["figures"]}
        tmp = folder / f".{name}.tmp"
        tmp.write_text(json.dumps(record, indent=1, default=str))
        tmp.replace(folder / f"{number:02d}_{name}.json")

    def save(self) -> None:
        rep = self.report
        rep["targets"] = report.verdicts(rep["figures"])
        rep["total_seconds"] = round(time.perf_counter() - self.t_start, 1)
        tmp = self.out / "gpu_check.json.tmp"
        tmp.write_text(json.dumps(rep, indent=1, default=str))
        tmp.replace(self.out / "gpu_check.json")


def _jsonable(obj):
    return json.loads(json.dumps(obj, default=lambda o: asdict(o) if hasattr(o, "__dataclass_fields__") else str(o)))


def run(check: Check) -> None:
    from gpu import steps

    steps.run_all(check)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True, help="where gpu_check.json goes")
    ap.add_argument("--work", type=Path, help="scratch folder for corpus and shards (default: a temp dir)")
    ap.add_argument("--dry-run", action="store_true", help="the same steps on the CPU with tiny sizes")
    ap.add_argument("--budget", type=float, help="seconds this process may take (default: the plan's)")
    args = ap.parse_args(argv)
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    plan = dry_plan(cpus) if args.dry_run else gpu_plan(cpus)
    if args.budget is not None:
        plan = replace(plan, deadline_s=args.budget)
    args.out.mkdir(parents=True, exist_ok=True)
    work = args.work or Path(tempfile.mkdtemp(prefix="gpu_check_"))
    check = Check(plan, args.out, work, args.dry_run)
    check.log(json.dumps({"machine": check.report["machine"], "modules": check.modules}, indent=1))
    run(check)
    check.save()
    rep = check.report
    # The docs/design.md benchmark line, then the table last (what a reader of the tail sees).
    print(json.dumps({"bench": "gpu_check", "machine": rep["machine"], "figures": rep["figures"],
                      "ratios": rep.get("ratios", {})}, default=str))
    print(report.table(rep), flush=True)
    failed = [k for k, v in rep["correctness"].items() if not v.get("passed")]
    errors = [k for k, v in rep["steps"].items() if v["status"] == "error"]
    return 1 if failed or errors else 0


if __name__ == "__main__":
    sys.exit(main())
