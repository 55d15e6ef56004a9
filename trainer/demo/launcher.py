"""`make demo` (`python -m trainer.demo`): watch AlexNet learn, on this machine, in minutes.

Builds the demo corpus (photos that installed packages ship, in ImageNet's layout) under
demo/ if it is not there yet, shards it with `preprocess shard`, then starts `trainer serve`
and `trainer train` as child processes and prints the page's URL and the operator token.
Ctrl-C stops both (the trainer first, so that it checkpoints) and exits 0.

The configuration is chosen for the hardware: on a CPU a quarter-width AlexNet on 10
classes, whose validation error visibly falls within minutes; on a GPU the full-width net.
`--imagenet PATH` runs the real thing instead: the README's own commands, `preprocess shard
--src PATH` and `trainer train` with their defaults (shards/, runs/alexnet, the paper's
settings, resumed across restarts). `--prepare` only builds the demo shards and prints the
trainer flags for them (docker/trainer-entrypoint.sh uses it).
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from preprocess.contract import DEFAULT_DATA_DIR, MANIFEST_NAME
from trainer.demo.supervisor import ChildFailed, StopRequested, Supervisor
from trainer.runstore.defaults import DEFAULT_RUN_DIR, DEFAULT_RUN_NAME, RUNS_DB_NAME, RUNS_DIR

SERVE_LOG = "serve.log"


@dataclass(frozen=True)
class DemoPlan:
    """The corpus and the trainer flags of one demo configuration."""

    name: str
    classes: int
    train_per_class: int
    val_per_class: int
    train_flags: tuple[str, ...]

    @property
    def corpus_key(self) -> str:
        return f"c{self.classes}-t{self.train_per_class}-v{self.val_per_class}"


def demo_plan(device: str, quick: bool = False) -> DemoPlan:
    """The demo configuration for `device` (cpu or cuda); `quick` is the tests' tiny one.

    Not the paper's init: with biases of 1 the net stays at chance for hundreds of steps
    (measured here: 120 steps of the CPU demo at 0.90 top-1 error), which is longer than a
    demo's audience waits. Biases of 0.1 (BVLC's Caffe value) and, on the CPU, LR 0.02 took
    validation top-1 error from 0.90 to about 0.5 within 100 steps of batch 32.
    """
    common = ("--demo", "--lr-policy", "manual", "--no-tencrop", "--bias-const", "0.1",
              "--checkpoint-minutes", "2")
    if quick:
        return DemoPlan("quick", 10, 4, 2, common + (
            "--device", "cpu", "--backend", "reference", "--width", "0.0625", "--batch-size", "8",
            "--epochs", "1000", "--num-workers", "1", "--log-every", "1"))
    if device == "cuda":
        # The full net: on a GPU an epoch of 2,600 images takes seconds.
        return DemoPlan("gpu", 10, 260, 50, common + (
            "--device", "cuda", "--width", "1.0", "--batch-size", "128", "--lr", "0.01",
            "--epochs", "60", "--log-every", "5"))
    # A quarter-width net (3.6M parameters): an epoch of 1,000 images is 31 steps.
    return DemoPlan("cpu", 10, 100, 20, common + (
        "--device", "cpu", "--backend", "reference", "--width", "0.25", "--batch-size", "32",
        "--lr", "0.02", "--epochs", "40", "--num-workers", "2", "--log-every", "5"))


def has_gpu() -> bool:
    import torch  # here only: the rest of the demo process never needs torch

    return torch.cuda.is_available()


def _python(*args: str) -> list[str]:
    return [sys.executable, "-m", *args]


def build_once(children: Supervisor, out: Path, argv: list[str]) -> Path:
    """Run `argv + [--out tmp]` unless `out` exists; rename tmp -> out when it succeeds, so an
    interrupted build is redone, never half-used."""
    if out.exists():
        return out
    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.parent.mkdir(parents=True, exist_ok=True)
    children.run_to_end([*argv, "--out", str(tmp)])
    tmp.rename(out)
    return out


def prepare_demo_shards(children: Supervisor, workdir: Path, plan: DemoPlan) -> Path:
    corpus = build_once(children, workdir / f"corpus-{plan.corpus_key}", _python(
        "preprocess.cli", "demo-corpus", "--classes", str(plan.classes),
        "--train-per-class", str(plan.train_per_class), "--val-per-class", str(plan.val_per_class)))
    workers = str(max(1, min(4, os.cpu_count() or 1)))
    return build_once(children, workdir / f"shards-{plan.corpus_key}", _python(
        "preprocess.cli", "shard", "--src", str(corpus),  # its LOC_synset_mapping.txt found there
        "--workers", workers, "--progress", "lines"))


def imagenet_shard_argv(imagenet: Path) -> list[str]:
    """The README's `preprocess shard --src imagenet/`: its defaults put the shards in
    shards/ and find the label files at the top of the folder."""
    return _python("preprocess.cli", "shard", "--src", str(imagenet))


def prepare_imagenet_shards(children: Supervisor, imagenet: Path) -> Path:
    """`preprocess shard` of a real ImageNet folder, unless its dataset.json is written (the
    last step: until then a rerun resumes, keeping finished shards)."""
    out = Path(DEFAULT_DATA_DIR)
    if not (out / MANIFEST_NAME).exists():
        children.run_to_end(imagenet_shard_argv(imagenet))
    return out


def operator_token(runs_db: Path) -> str:
    """ALEXNET_TOKEN if set, else the token kept 0600 beside the run store (made once), the
    same file `trainer serve` itself would use."""
    from trainer.server.auth import read_token_file, write_token_file

    if os.environ.get("ALEXNET_TOKEN"):
        return os.environ["ALEXNET_TOKEN"]
    path = runs_db.parent / (runs_db.name + ".token")
    if not path.exists():
        write_token_file(path, secrets.token_urlsafe(32))
    return read_token_file(path)


def pick_port(host: str, wanted: int) -> int:
    """`wanted` if it is free, else one the kernel picks (a shared machine may have 8000 taken)."""
    for port in (wanted, 0):
        with socket.socket() as s:
            try:
                s.bind((host, port))
            except OSError:
                continue
            return s.getsockname()[1]
    raise OSError(f"no free port on {host}")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m trainer.demo", description=__doc__.split("\n\n")[0])
    p.add_argument("--imagenet", type=Path, help="an ImageNet folder (train/, val/): the paper's settings")
    p.add_argument("--workdir", type=Path, default=Path("demo"), help="corpus, shards and runs of the demo (default demo/)")
    p.add_argument("--runs-dir", type=Path, help="where the run store and run folders go (default WORKDIR/runs)")
    p.add_argument("--host", default="127.0.0.1", help="address of the page (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="port of the page (default 8000, another if taken)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--run-name", help="resume this run (default: a fresh demo-YYYYmmdd-HHMMSS)")
    p.add_argument("--quick", action="store_true", help="a tiny corpus and net (for tests)")
    p.add_argument("--prepare", action="store_true",
                   help="only build the demo shards; print the trainer flags for them on stdout")
    return p.parse_args(argv)


def train_argv(args, plan: DemoPlan | None, shards: Path, runs_dir: Path) -> list[str]:
    if plan is None:
        # ImageNet: the trainer's defaults are the paper's settings and the README's paths
        # (shards/, runs/alexnet with its run store beside it, --resume auto); say only the rest.
        run_dir = runs_dir / (args.run_name or DEFAULT_RUN_NAME)
        return ([] if args.device == "auto" else ["--device", args.device]) + \
            ([] if run_dir == DEFAULT_RUN_DIR else ["--run-dir", str(run_dir)])
    name = args.run_name or time.strftime("demo-%Y%m%d-%H%M%S")
    return ["--data", str(shards), "--run-dir", str(runs_dir / name),
            "--runs-db", str(runs_dir / RUNS_DB_NAME), "--resume", "auto", *plan.train_flags]


def say(msg: str) -> None:
    print(f"demo: {msg}", flush=True)


def run_demo(args, children: Supervisor) -> int:
    # The real thing keeps its runs where the README's commands put them, not under demo/.
    runs_dir = args.runs_dir or (RUNS_DIR if args.imagenet else args.workdir / "runs")
    runs_dir.mkdir(parents=True, exist_ok=True)
    runs_db = runs_dir / RUNS_DB_NAME
    device = args.device if args.device != "auto" else ("cuda" if has_gpu() else "cpu")
    plan = None if args.imagenet else demo_plan(device, args.quick)

    token = operator_token(runs_db)
    port = pick_port(args.host, args.port)
    if port != args.port:
        say(f"port {args.port} is taken; using {port}")
    serve = children.start("serve", _python("trainer", "serve", "--runs-db", str(runs_db),
                                            "--host", args.host, "--port", str(port)),
                           env={"ALEXNET_TOKEN": token}, log=runs_dir / SERVE_LOG)
    url = f"http://{args.host}:{port}/"
    try:
        children.wait_http(serve, url + "healthz")
    except ChildFailed as e:
        log = (runs_dir / SERVE_LOG).read_text(errors="replace").strip().splitlines()[-5:]
        raise ChildFailed("\n".join([str(e), *log])) from None
    say(f"page   {url}")
    say(f"token  {token}")
    say(f"serve pid {serve.pid} (its log: {runs_dir / SERVE_LOG}); Ctrl-C stops everything")

    if plan is None:
        shards = prepare_imagenet_shards(children, args.imagenet)
    else:
        say(f"{plan.name} configuration on {device}: {plan.classes} classes, "
            f"{plan.train_per_class} train + {plan.val_per_class} val images each")
        shards = prepare_demo_shards(children, args.workdir, plan)
    train = children.start("train", _python("trainer", "train", *train_argv(args, plan, shards, runs_dir)))
    say(f"train pid {train.pid}")
    return children.supervise(serve, train)


def run_prepare(args, children: Supervisor) -> int:
    device = "cpu" if args.device == "auto" else args.device
    plan = demo_plan(device, args.quick)
    runs_dir = args.runs_dir or args.workdir / "runs"
    with children.output_to_stderr():
        shards = prepare_demo_shards(children, args.workdir, plan)
    args.run_name = args.run_name or "demo"
    print(" ".join(train_argv(args, plan, shards, runs_dir)))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    children = Supervisor()
    with children.stop_on_signals():
        try:
            rc = run_prepare(args, children) if args.prepare else run_demo(args, children)
        except StopRequested:
            say("stopping (the trainer first, so that it checkpoints)")
            rc = 0
        except ChildFailed as e:
            print(f"demo: {e}", file=sys.stderr, flush=True)
            rc = 1
        finally:
            children.stop_all()
    if not args.prepare:
        say("stopped")
    return rc

