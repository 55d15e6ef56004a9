"""The GPU check's steps in the order they run; `benchmarks/gpu_check.py` owns the runner.

`run_all` is the running order: one `check.step` per step, with what it needs and what it
must come after. Each step below is a function of the check that returns what goes into
the log and puts its figures into `check.report`. The loaders and the model are configured
as `trainer train` configures them on a GPU (float32 batches, channels-last, bf16 autocast),
and the training figures time the trainer's own step, so the figures are the trainer's.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from gpu import data, decode, levers, loaders, report, train


HERE = Path(__file__).resolve().parent
DALI = ("nvidia.dali", "pipeline")
TRAIN_BENCH = HERE.parent / "train_bench.py"


def run_all(check) -> None:
    """The steps by value (issue 25): the data; correctness (a figure of a wrong path is
    worth nothing); the pipeline; the training step compiled and eager; training fed by
    DALI, compiled; the Trainer's own loop; the GPU tests; then the levers and the
    diagnostics, which the deadline drops first."""
    p, fig = check.plan, check.report["figures"]
    check.step("data", lambda: make_data(check), needs=("preprocess.cli", "simplejpeg", "torch"), estimate_s=60)
    check.step("dali_vs_cpu", lambda: dali_vs_cpu(check), needs=DALI, estimate_s=20)
    check.step("center_vs_reference", lambda: center_vs_reference(check), needs=DALI, estimate_s=20,
               after=("data",))
    check.step("loss_falls", lambda: loss_falls(check), needs=("pipeline", "trainer.run.model"), estimate_s=30,
               after=("data",))
    check.step("dali_pipeline", lambda: loader_figure(check, "dali", p.dali_batch, p.dali_threads,
                                                      "dali_images_per_s"),
               needs=DALI, estimate_s=30, after=("data",))
    # torch.compile: Inductor builds its kernels' launchers with the host's C compiler, and
    # compiling costs minutes on a shared CPU: the dry run times the eager step only.
    compiler = shutil.which("cc") or shutil.which("gcc")
    compiled = not check.dry_run and compiler is not None
    if compiled:
        check.step("train_bare_compiled", lambda: train_bare(check, compile=True), needs=("trainer.run.model",),
                   estimate_s=70, after=("data",))
    else:
        check.skip("train_bare_compiled", "dry run" if check.dry_run else "no C compiler (cc, gcc) for torch.compile")
    check.step("train_bare", lambda: train_bare(check), needs=("trainer.run.model",), estimate_s=20, after=("data",))
    check.step("scaling_inputs", lambda: scaling_inputs(check), needs=("trainer.run.model",), after=("train_bare",))
    check.step("train_fed", lambda: train_fed(check, compile=compiled), needs=("pipeline", "trainer.run.model"),
               estimate_s=45, after=("data",))
    if TRAIN_BENCH.is_file():
        check.step("trainer_loop", lambda: trainer_loop(check), needs=("pipeline", "trainer.run.model"),
                   estimate_s=50, after=("data",))
    else:
        check.skip("trainer_loop", "benchmarks/train_bench.py is not there")
    check.step("pytest_gpu", lambda: pytest_gpu(check), needs=("pytest",), estimate_s=60)
    # The levers, fed training first: the question the standalone levers could not answer.
    n_fed = 2 + len(p.fed_hw_loads) + len(p.fed_threads) + len(p.fed_depths)
    check.step("fed_levers", lambda: fed_levers(check, compiled), needs=DALI + ("trainer.run.model",),
               estimate_s=n_fed * (p.fed_lever_s + 4), after=("data",))
    check.step("dali_external_source", lambda: dali_external_source(check), needs=DALI, estimate_s=40,
               after=("dali_pipeline",))
    check.step("dali_levers", lambda: dali_levers(check), needs=DALI, estimate_s=10 * len(p.dali_levers),
               after=("dali_pipeline",))
    if check.dry_run or (fig.get("dali_images_per_s") or 0) < report.DALI_TARGET:
        check.step("dali_pipeline_all_threads", lambda: loader_figure(check, "dali", p.dali_batch, _cpus(check),
                                                                      "dali_all_threads_images_per_s"),
                   needs=DALI, estimate_s=30, after=("dali_pipeline",))
    else:
        check.skip("dali_pipeline_all_threads", "target already met")
    check.step("train_levers", lambda: train_levers(check), needs=("trainer.run.model",), estimate_s=70,
               after=("data",))
    check.step("profile_train", lambda: profile_train(check), needs=("trainer.run.model",), estimate_s=20,
               after=("data",))
    check.step("reference_loader", lambda: loader_figure(check, "reference", p.ref_batch, p.ref_workers,
                                                         "reference_images_per_s"),
               needs=("pipeline",), estimate_s=45, after=("data",))
    if fig.get("dali_images_per_s") and fig.get("reference_images_per_s"):
        check.report.setdefault("ratios", {})["dali_over_reference"] = round(
            fig["dali_images_per_s"] / fig["reference_images_per_s"], 2)
    check.step("gpu_decode", lambda: gpu_decode(check), needs=("torchvision", "pipeline"), estimate_s=20, after=("data",))


def _shards(check) -> Path:
    return check.work / "shards"


def _classes(check) -> int:
    return check.report["data"]["classes"]


def _cpus(check) -> int:
    return check.report["machine"]["cpus_usable"] or 1


def _fed_backend(check) -> str:
    return "dali" if check.has("nvidia.dali") is None else "reference"


# -- data and correctness -------------------------------------------------------------------
def make_data(check) -> dict:
    p = check.plan
    info = data.write_corpus(check.work / "corpus", p.classes, p.train_per_class, p.val_per_class,
                             workers=_cpus(check))
    info.update(data.shard(check.work / "corpus", _shards(check), _cpus(check), p.shard_max_count, check.log))
    check.report["data"] = info
    return info


def dali_vs_cpu(check) -> dict:
    from synthetic_shards import make_dataset

    p = check.plan
    ds = make_dataset(check.work / "check_shards", list(p.check_sizes), [8], seed=5)
    result = loaders.check_against_cpu(ds, p.device, p.check_batch, p.dali_threads)
    check.report["correctness"]["dali_vs_cpu"] = result
    return result


def center_vs_reference(check) -> dict:
    p = check.plan
    result = loaders.center_against_reference(_shards(check), p.device, p.check_batch, p.dali_threads)
    check.report["correctness"]["center_vs_reference"] = result
    return result


def loss_falls(check) -> dict:
    p, backend = check.plan, _fed_backend(check)
    loader = loaders.open_loader(_shards(check), backend, p.device, p.train_batch, p.dali_threads)
    loader.set_epoch(0)
    images, labels = next(iter(loader))
    result = train.loss_falls(images, labels, _classes(check), p.width, p.device, p.amp, p.channels_last,
                              p.loss_steps)
    result["backend"] = backend
    check.report["correctness"]["loss_falls"] = result
    return result


# -- the loaders ----------------------------------------------------------------------------
def loader_figure(check, backend: str, batch: int, workers: int, figure: str) -> dict:
    """One loader's throughput, kept under `figure`."""
    p = check.plan
    loader = loaders.open_loader(_shards(check), backend, p.device, batch, workers, channels_last=p.channels_last)
    skip = loaders.DALI_SKIP if backend == "dali" else workers
    result = loaders.loader_throughput(loader, p.device, p.pipe_budget, skip)
    check.report["measurements"][figure] = result
    check.report["figures"][figure] = result["items_per_s"]
    return result


def dali_levers(check) -> dict:
    """The decoder split and the thread count, each against the product's setting."""
    import pipeline.dali as dali

    p, out, default = check.plan, {}, dali.HW_DECODER_LOAD
    for threads, hw in p.dali_levers:
        dali.HW_DECODER_LOAD = hw
        try:
            r = loader_figure(check, "dali", p.dali_batch, threads, f"dali_t{threads}_hw{hw}_images_per_s")
        finally:
            dali.HW_DECODER_LOAD = default
        out[f"threads={threads} hw_decoder_load={hw}"] = r["items_per_s"]
    out["product"] = {"threads": p.dali_threads, "hw_decoder_load": default,
                      "items_per_s": check.report["figures"].get("dali_images_per_s")}
    return out


def dali_external_source(check) -> dict:
    """The train graph fed by DALI's webdataset reader, the DALI backend's feed before issue
    25 and the product's (`benchmarks/dali_source_probe.py`), interleaved."""
    import dali_source_probe

    p = check.plan
    device_id = None if p.device == "cpu" else 0
    batches, repeats = (2, 1) if check.dry_run else (40, 2)
    result = dali_source_probe.measure(str(_shards(check)), p.dali_batch, p.dali_threads,
                                       py_workers=max(1, p.dali_threads // 2), batches=batches, repeats=repeats,
                                       device_id=device_id)
    check.report["measurements"]["dali_external_source"] = result
    check.report["figures"]["dali_external_source_images_per_s"] = result["external_source_images_per_s"]
    ratios = check.report.setdefault("ratios", {})
    ratios["dali_external_source_over_reader"] = result["external_source_over_reader"]
    ratios["dali_feed_after_over_before"] = result["after_over_before"]
    return result


# -- training -------------------------------------------------------------------------------
def train_bare(check, compile: bool = False) -> dict:
    p = check.plan
    result = train.bare(_classes(check), p.width, p.train_batch, p.device, p.amp, p.channels_last, p.bare_budget,
                        compile=compile)
    name = "train_bare_compiled" if compile else "train_bare"
    check.report["measurements"][name] = result
    check.report["figures"][f"{name}_images_per_s"] = result["items_per_s"]
    return result


def scaling_inputs(check) -> dict:
    """What benchmarks/scaling_model.py needs from this machine: the one-GPU step at the
    trainer's batch and the gradient's size. The all-reduce time is recorded as 0 because
    on one GPU DDP reduces nothing (a world of one): no figure of communication exists
    until a multi-GPU loan measures NCCL's all-reduce of these bytes."""
    from trainer.run.config import TrainConfig
    from trainer.run.model import build_model

    p = check.plan
    params = sum(t.numel() for t in build_model(TrainConfig(data="", run_dir="", num_classes=1000)).parameters())
    bare = check.report["measurements"]["train_bare"]
    result = {"step_ms": round(1000 * p.train_batch / bare["items_per_s"], 3), "batch": p.train_batch,
              "grad_bytes_fp32": params * 4, "allreduce_ms_one_gpu": 0.0,
              "note": "a world of one all-reduces nothing; run scaling_model.py --step-ms with step_ms"}
    check.report["measurements"]["scaling_inputs"] = result
    return result


def train_levers(check) -> dict:
    p = check.plan
    result = levers.run(_classes(check), p.width, p.train_batch, p.device, p.amp, p.channels_last,
                        p.lever_budget, check.log)
    check.report["measurements"]["train_levers"] = result
    for name, r in result.items():
        if "items_per_s" in r:
            check.report["figures"][f"train_lever_{name}_images_per_s"] = r["items_per_s"]
    return result


def profile_train(check) -> dict:
    p = check.plan
    result = train.profile(_classes(check), p.width, p.train_batch, p.device, p.amp, p.channels_last,
                           p.profile_steps, check.out / "profile_train.txt")
    check.report["measurements"]["profile_train"] = result
    return result


def train_fed(check, compile: bool = False) -> dict:
    p, backend = check.plan, _fed_backend(check)
    workers = p.dali_threads if backend == "dali" else p.ref_workers
    loader = loaders.open_loader(_shards(check), backend, p.device, p.train_batch, workers,
                                 channels_last=p.channels_last)
    # One compiled step for this and the fed levers: a second compile would cost them ~a minute.
    check.fed_step = train.fed_step(_classes(check), p.width, p.device, p.amp, p.channels_last, compile)
    result = train.fed(loaders.epochs(loader), _classes(check), p.width, p.train_batch, p.device, p.amp,
                       p.channels_last, p.fed_budget, compile=compile, step=check.fed_step)
    result["backend"] = backend
    result["batches_per_epoch"] = len(loader)
    check.report["measurements"]["train_fed"] = result
    # Only a DALI-fed figure answers the targets; a reference-fed one is kept apart.
    key, fig = "" if backend == "dali" else "_reference", check.report["figures"]
    fig[f"train_fed{key}_images_per_s"] = result["items_per_s"]
    fig[f"data_wait_fraction{key}"] = result["data_wait_fraction"]
    fig[f"next_fraction_as_trainer{key}"] = result["next_fraction_as_trainer"]
    return result


def fed_levers(check, compiled: bool) -> dict:
    """hw_decoder_load, DALI threads and prefetch depth, each timed as fed training."""
    from gpu import fedlevers

    p = check.plan
    step = getattr(check, "fed_step", None)  # train_fed's, compiled already
    result = fedlevers.run(_shards(check), _classes(check), p, compiled, p.fed_lever_s, check.log, step)
    check.report["measurements"]["fed_levers"] = result
    for name, r in result.items():
        if isinstance(r, dict) and "over_product" in r:
            check.report.setdefault("ratios", {})[f"fed_lever_{name}_over_product"] = r["over_product"]
    return result


def trainer_loop(check) -> dict:
    """benchmarks/train_bench.py (the trainer's own bench): `trainer.run.train.Trainer` itself,
    DALI-fed on a GPU, against its bare loop. Its steps stay inside one epoch: an epoch end
    would write a 0.5 GB checkpoint inside the timed window."""
    p = check.plan
    per_epoch = _classes(check) * p.train_per_class // p.train_batch
    steps = max(1, min(p.trainer_steps, per_epoch - p.trainer_warmup - 2))
    argv = ["--data", str(_shards(check)), "--device", p.device, "--width", str(p.width),
            "--batch-size", str(p.train_batch), "--steps", str(steps), "--warmup", str(p.trainer_warmup),
            "--repeats", "1", "--workers", str(p.dali_threads), "--log-every", str(p.trainer_warmup)]
    result = data.run_json(TRAIN_BENCH, argv, check.log)
    check.report["measurements"]["train_bench"] = result
    check.report["figures"]["trainer_loop_images_per_s"] = result["figures"]["trainer_images_per_sec"]
    check.report["figures"]["trainer_loop_data_wait_fraction"] = result["figures"]["trainer_data_wait_frac"]
    return result


# -- GPU decoding and the GPU tests ------------------------------------------------------------
def gpu_decode(check) -> dict:
    p = check.plan
    jpegs = decode.read_jpegs(_shards(check), p.decode_batch * 8)
    result = decode.decode_throughput(jpegs, p.decode_batch, p.device, p.decode_budget)
    check.report["measurements"]["gpu_decode"] = result
    check.report["figures"]["gpu_decode_images_per_s"] = result["items_per_s"]
    return result


def pytest_gpu(check) -> dict:
    """The project's own `gpu`-marked tests (e.g. the pipeline's nvJPEG bound), which only a
    lent GPU runs. Modules whose imports are missing there (the server's) fail to collect;
    that is reported, not counted as a failure of the GPU tests."""
    root = HERE.parent.parent
    files = sorted(str(f.relative_to(root)) for f in (root / "tests").rglob("test_*.py")
                   if "mark.gpu" in f.read_text())  # not all of tests/: 14 s of collection
    result = data.run_pytest(root, ["-m", "gpu", *files], check.log)
    result["passed"] = result["failed"] == 0 and (result["passed_tests"] > 0 or check.dry_run)
    check.report["correctness"]["pytest_gpu"] = result
    return result
