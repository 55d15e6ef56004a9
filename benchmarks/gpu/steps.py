"""The GPU check's steps in the order they run; `benchmarks/gpu_check.py` owns the runner.

Each step function returns what goes into the log; figures go into `check.report`.
The loaders and the model are configured as `trainer train` configures them on a GPU
(float32 batches, channels-last, bf16 autocast), so the figures are the trainer's.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from gpu import data, decode, levers, loaders, report, train


HERE = Path(__file__).resolve().parent


def run_all(check) -> None:
    p, rep = check.plan, check.report
    shards = check.work / "shards"
    fig, meas = rep["figures"], rep["measurements"]

    def make_data():
        info = data.write_corpus(check.work / "corpus", p.classes, p.train_per_class, p.val_per_class,
                                 workers=rep["machine"]["cpus_usable"] or 1)
        info.update(data.shard(check.work / "corpus", shards, rep["machine"]["cpus_usable"] or 1,
                               p.shard_max_count, check.log))
        rep["data"] = info
        return info

    check.step("data", make_data, needs=("preprocess.cli", "simplejpeg", "torch"), estimate_s=60)

    def dali_vs_cpu():
        from synthetic_shards import make_dataset

        ds = make_dataset(check.work / "check_shards", list(p.check_sizes), [8], seed=5)
        result = loaders.check_against_cpu(ds, p.device, p.check_batch, p.dali_threads)
        rep["correctness"]["dali_vs_cpu"] = result
        return result

    check.step("dali_vs_cpu", dali_vs_cpu, needs=("nvidia.dali", "pipeline"), estimate_s=20)

    def center_vs_reference():
        result = loaders.center_against_reference(shards, p.device, p.check_batch, p.dali_threads)
        rep["correctness"]["center_vs_reference"] = result
        return result

    check.step("center_vs_reference", center_vs_reference, needs=("nvidia.dali", "pipeline"), estimate_s=20,
               after=("data",))

    classes = lambda: rep["data"]["classes"]  # noqa: E731

    def loss_falls():
        backend = "dali" if check.has("nvidia.dali") is None else "reference"
        loader = loaders.open_loader(shards, backend, p.device, p.train_batch, p.dali_threads)
        loader.set_epoch(0)
        images, labels = next(iter(loader))
        result = train.loss_falls(images, labels, classes(), p.width, p.device, p.amp, p.channels_last,
                                  p.loss_steps)
        result["backend"] = backend
        rep["correctness"]["loss_falls"] = result
        return result

    check.step("loss_falls", loss_falls, needs=("pipeline", "trainer.model"), estimate_s=30, after=("data",))

    def pipeline(backend, batch, workers, figure):
        def measure():
            loader = loaders.open_loader(shards, backend, p.device, batch, workers,
                                         channels_last=p.channels_last)
            skip = loaders.DALI_SKIP if backend == "dali" else workers
            result = loaders.loader_throughput(loader, p.device, p.pipe_budget, skip)
            meas[figure] = result
            fig[figure] = result["items_per_s"]
            return result
        return measure

    check.step("dali_pipeline", pipeline("dali", p.dali_batch, p.dali_threads, "dali_images_per_s"),
               needs=("nvidia.dali", "pipeline"), estimate_s=40, after=("data",))
    # Below target, is it CPU threads (reader, parsing, nvJPEG's Huffman stage)? Every core.
    cpus = rep["machine"]["cpus_usable"] or 1
    if check.dry_run or (fig.get("dali_images_per_s") or 0) < report.DALI_TARGET:
        check.step("dali_pipeline_all_threads",
                   pipeline("dali", p.dali_batch, cpus, "dali_all_threads_images_per_s"),
                   needs=("nvidia.dali", "pipeline"), estimate_s=40, after=("dali_pipeline",))
    else:
        check.skip("dali_pipeline_all_threads", "target already met")
    def dali_levers():
        # The decoder split and the thread count, each against the product's setting above.
        import pipeline.dali as dali

        out, default = {}, dali.HW_DECODER_LOAD
        for threads, hw in p.dali_levers:
            dali.HW_DECODER_LOAD = hw
            try:
                r = pipeline("dali", p.dali_batch, threads, f"dali_t{threads}_hw{hw}_images_per_s")()
            finally:
                dali.HW_DECODER_LOAD = default
            out[f"threads={threads} hw_decoder_load={hw}"] = r["items_per_s"]
        out["product"] = {"threads": p.dali_threads, "hw_decoder_load": default,
                          "items_per_s": fig.get("dali_images_per_s")}
        return out

    check.step("dali_levers", dali_levers, needs=("nvidia.dali", "pipeline"),
               estimate_s=10 * len(p.dali_levers), after=("dali_pipeline",))
    check.step("reference_loader",
               pipeline("reference", p.ref_batch, p.ref_workers, "reference_images_per_s"),
               needs=("pipeline",), estimate_s=45, after=("data",))
    if fig.get("dali_images_per_s") and fig.get("reference_images_per_s"):
        rep.setdefault("ratios", {})["dali_over_reference"] = round(
            fig["dali_images_per_s"] / fig["reference_images_per_s"], 2)

    def bare():
        result = train.bare(classes(), p.width, p.train_batch, p.device, p.amp, p.channels_last, p.bare_budget)
        meas["train_bare"] = result
        fig["train_bare_images_per_s"] = result["items_per_s"]
        return result

    # The model and settings the trainer runs (trainer.model.configure_cuda on a GPU).
    check.step("train_bare", bare, needs=("trainer.model",), estimate_s=25, after=("data",))

    def train_levers():
        result = levers.run(classes(), p.width, p.train_batch, p.device, p.amp, p.channels_last,
                            p.lever_budget, check.log)
        meas["train_levers"] = result
        for name, r in result.items():
            if "items_per_s" in r:
                fig[f"train_lever_{name}_images_per_s"] = r["items_per_s"]
        return result

    check.step("train_levers", train_levers, needs=("trainer.model",), estimate_s=70, after=("data",))

    def profile():
        result = train.profile(classes(), p.width, p.train_batch, p.device, p.amp, p.channels_last,
                               p.profile_steps, check.out / "profile_train.txt")
        meas["profile_train"] = result
        return result

    check.step("profile_train", profile, needs=("trainer.model",), estimate_s=20, after=("data",))

    def fed():
        backend = "dali" if check.has("nvidia.dali") is None else "reference"
        workers = p.dali_threads if backend == "dali" else p.ref_workers
        loader = loaders.open_loader(shards, backend, p.device, p.train_batch, workers,
                                     channels_last=p.channels_last)
        result = train.fed(loaders.epochs(loader), classes(), p.width, p.train_batch, p.device, p.amp,
                           p.channels_last, p.fed_budget)
        result["backend"] = backend
        result["batches_per_epoch"] = len(loader)
        meas["train_fed"] = result
        # Only a DALI-fed figure answers the targets; a reference-fed one is kept apart.
        key = "" if backend == "dali" else "_reference"
        fig[f"train_fed{key}_images_per_s"] = result["items_per_s"]
        fig[f"data_wait_fraction{key}"] = result["data_wait_fraction"]
        fig[f"next_fraction_as_trainer{key}"] = result["next_fraction_as_trainer"]
        return result

    check.step("train_fed", fed, needs=("pipeline", "trainer.model"), estimate_s=50, after=("data",))

    def trainer_loop():
        # benchmarks/train_bench.py (the trainer's own bench): `trainer.train.Trainer` itself,
        # DALI-fed on a GPU, against its bare loop. Its steps stay inside one epoch: an epoch
        # end would write a 0.5 GB checkpoint inside the timed window.
        per_epoch = rep["data"]["classes"] * p.train_per_class // p.train_batch
        steps = max(1, min(p.trainer_steps, per_epoch - p.trainer_warmup - 2))
        argv = ["--data", str(shards), "--device", p.device, "--width", str(p.width),
                "--batch-size", str(p.train_batch), "--steps", str(steps), "--warmup", str(p.trainer_warmup),
                "--repeats", "1", "--workers", str(p.dali_threads), "--log-every", str(p.trainer_warmup)]
        result = data.run_json(HERE.parent / "train_bench.py", argv, check.log)
        meas["train_bench"] = result
        fig["trainer_loop_images_per_s"] = result["figures"]["trainer_images_per_sec"]
        fig["trainer_loop_data_wait_fraction"] = result["figures"]["trainer_data_wait_frac"]
        return result

    if (HERE.parent / "train_bench.py").is_file():
        check.step("trainer_loop", trainer_loop, needs=("pipeline", "trainer.model"), estimate_s=60,
                   after=("data",))
    else:
        check.skip("trainer_loop", "benchmarks/train_bench.py is not there")

    def gpu_decode():
        jpegs = decode.read_jpegs(shards, p.decode_batch * 8)
        result = decode.decode_throughput(jpegs, p.decode_batch, p.device, p.decode_budget)
        meas["gpu_decode"] = result
        fig["gpu_decode_images_per_s"] = result["items_per_s"]
        return result

    check.step("gpu_decode", gpu_decode, needs=("torchvision", "pipeline"), estimate_s=20, after=("data",))

    def pytest_gpu():
        # The project's own `gpu`-marked tests (e.g. the pipeline's nvJPEG bound), which only
        # a lent GPU runs. Modules whose imports are missing there (the server's) fail to
        # collect; that is reported, not counted as a failure of the GPU tests.
        root = HERE.parent.parent
        files = sorted(str(f.relative_to(root)) for f in (root / "tests").rglob("test_*.py")
                       if "mark.gpu" in f.read_text())  # not all of tests/: 14 s of collection
        result = data.run_pytest(root, ["-m", "gpu", *files], check.log)
        result["passed"] = result["failed"] == 0 and (result["passed_tests"] > 0 or check.dry_run)
        rep["correctness"]["pytest_gpu"] = result
        return result

    check.step("pytest_gpu", pytest_gpu, needs=("pytest",), estimate_s=90)

    def compiled():
        result = train.bare(classes(), p.width, p.train_batch, p.device, p.amp, p.channels_last,
                            p.bare_budget, compile=True)
        meas["train_bare_compiled"] = result
        fig["train_bare_compiled_images_per_s"] = result["items_per_s"]
        return result

    # What would close a training gap: torch.compile (fuses LRN and the pointwise ops).
    # Only where the target is missed, last of all, as compiling costs
    # a minute; the dry run skips it (minutes on a shared CPU).
    # Inductor builds its kernels' launchers with the host's C compiler.
    compiler = shutil.which("cc") or shutil.which("gcc")
    if check.dry_run or (fig.get("train_bare_images_per_s") or 0) >= report.TRAIN_TARGET or not compiler:
        check.skip("train_bare_compiled", "dry run" if check.dry_run else
                   "no C compiler (cc, gcc) for torch.compile" if not compiler else "target already met")
    else:
        check.step("train_bare_compiled", compiled, needs=("trainer.model",), estimate_s=80, after=("data",))
