"""The data pipeline under the check: throughput of both backends, and the GPU path's
augmentation checked against the CPU computation for the same crops, flips and lighting.

A loader builds its pipeline (DALI) or its worker pool (reference) at every epoch start. On
ImageNet that cost is spread over 10,000 batches; on the check's 20,000 images it would
be a large share of each short epoch. So each epoch's first batches are left out of the
steady figure, and the figure with the starts is reported beside it.
"""

from __future__ import annotations

import gc
import time
from pathlib import Path

import numpy as np

from gpu.timing import Budget, sync

CHECK_LIGHTING_STD = 1.0  # the correctness check's alpha spread (the paper's is 0.1)
DALI_SKIP = 4  # DALI's prefetch queue (depth 2), the loader's producer thread's batch, the batch being made


def open_loader(data_dir, backend, device, batch, workers, **fields):
    """The product's loader; `fields` are any others of `pipeline.base.LoaderConfig`."""
    from pipeline import make_loader

    loader = make_loader(data_dir, batch_size=batch, backend=backend, device=device, num_workers=workers, **fields)
    # make_loader falls back to the reference loader where DALI is missing: never let a
    # reference figure pass for a DALI one.
    if loader.backend != backend:
        raise RuntimeError(f"asked for the {backend} loader, got {loader.backend} (is DALI importable?)")
    return loader


def epochs(loader):
    """(batch number within its epoch, batch) over successive epochs, forever."""
    epoch = 0
    while True:
        loader.set_epoch(epoch)
        n = 0
        for n, batch in enumerate(loader):
            yield n, batch
        if n == 0:
            raise RuntimeError("the loader yielded no batch in an epoch")
        epoch += 1


def loader_throughput(loader, device: str, budget: Budget, skip: int) -> dict:
    """Steady images/s, and images/s over whole epochs with their starts.

    Steady: each epoch's first `skip` batches are left out, and the clock starts when the
    last of them arrives. `skip` is how many batches a loader can have in flight when its
    epoch begins (DALI's prefetch queue; the reference loader's workers, one batch each),
    since those were made while the clock was not running.
    """
    skip = max(1, min(skip, len(loader) // 2))
    timed_images, timed_s, steps, starts, all_images = 0, 0.0, 0, [], 0
    t_begin = t_epoch = t0 = time.perf_counter()
    stream = epochs(loader)
    for n, (images, labels) in stream:
        all_images += int(labels.shape[0])
        last = n + 1 == len(loader)
        if n == 0:
            sync(device)
            starts.append(time.perf_counter() - t_epoch)
        if n == skip - 1:
            sync(device)
            t0 = time.perf_counter()
        elif n >= skip:
            timed_images += int(labels.shape[0])
            steps += 1
            if last or steps % 8 == 0 or steps >= budget.max_steps:
                sync(device)  # close the interval exactly, then decide whether to stop
                timed_s += time.perf_counter() - t0
                t0 = time.perf_counter()
                if steps >= budget.max_steps or timed_s >= budget.min_seconds:
                    break
        if last:
            t_epoch = time.perf_counter()
    sync(device)
    wall = time.perf_counter() - t_begin
    stream.close()
    gc.collect()  # let a DALI pipeline or a worker pool go before the next measurement
    return {"items_per_s": round(timed_images / timed_s, 1) if timed_s else None, "steps": steps,
            "seconds": round(timed_s, 3), "batch": loader.cfg.batch_size, "skip_per_epoch": skip,
            "items_per_s_with_epoch_starts": round(all_images / wall, 1),
            "epoch_start_s": round(float(np.mean(starts)), 3) if starts else None,
            "epochs_started": len(starts), "batches_per_epoch": len(loader)}


def check_against_cpu(data_dir: Path, device: str, batch: int, workers: int) -> dict:
    """One DALI batch on `device` against PIL decode + `pipeline.augment` on the CPU with
    the crops, flips and lighting alphas that DALI drew (its extra outputs).

    `data_dir` must label sample n with n (tests/pipeline/synthetic_shards), so that each
    row names its source image. The decoders differ (nvJPEG vs libjpeg-turbo), so the check
    allows small differences, and it also compares against the *mirrored* crop: a right
    answer must be far closer to its own parameters than to wrong ones. The lighting alphas
    are drawn with 10x the paper's spread (offsets of tens of levels instead of a few), so
    that a lighting offset left out or applied twice shows in each row's mean residual,
    where decoder differences average out.
    """
    from pipeline.augment import augment_image, lighting_matrix, lighting_offset, mean_array
    from pipeline.reference import ShardReader
    from pipeline.splitindex import SplitIndex

    loader = open_loader(data_dir, "dali", device, batch, workers, lighting_std=CHECK_LIGHTING_STD)
    loader.set_epoch(0)
    it = iter(loader)
    images, labels = next(it)
    params = loader.last_params
    got = images.float().permute(0, 2, 3, 1).cpu().numpy()  # NHWC, 0-255 units minus mean
    reader = ShardReader(SplitIndex.read(data_dir, "train"))
    mean = mean_array(loader.stats, "image")
    offsets = lighting_offset(params["alpha"], lighting_matrix(loader.stats))
    err, wrong, residual = [], [], []
    for row, n in enumerate(labels.tolist()):
        src, label, _ = reader.sample_id(n)  # sample n is the n-th in file order
        assert label == n, (label, n)
        x, y, flip = int(params["x"][row]), int(params["y"][row]), bool(params["flip"][row])
        want = augment_image(src, mean, x, y, flip, offsets[row])
        err.append(np.abs(got[row] - want))
        residual.append(np.abs((got[row] - want).reshape(-1, 3).mean(0)).max())
        wrong.append(float(np.abs(got[row] - want[:, ::-1]).mean()))
    del it
    gc.collect()
    err = np.stack(err)
    result = {
        "rows": len(err),
        "mean_abs": round(float(err.mean()), 4),
        "p999_abs": round(float(np.quantile(err, 0.999)), 3),
        "max_abs": round(float(err.max()), 3),
        "mirrored_mean_abs": round(float(np.mean(wrong)), 3),
        "offset_max_diff": round(float(np.abs(params["offset"] - offsets).max()), 6),
        "lighting_offset_max": round(float(np.abs(offsets).max()), 3),
        "row_mean_residual_max": round(float(np.max(residual)), 4),
        "flips": int(np.sum(params["flip"])),
    }
    # Thresholds in 0-255 levels: decoders (nvJPEG, the hardware JPEG engine, libjpeg-turbo)
    # agree to a level or two on average and differ by more only at sharp colour edges
    # (chroma upsampling); a wrong crop or flip is off by tens, a wrong lighting offset
    # moves a row's mean by the offset itself.
    result["passed"] = bool(result["mean_abs"] < 3.0 and result["p999_abs"] < 48
                            and result["mirrored_mean_abs"] > 4 * result["mean_abs"]
                            and result["offset_max_diff"] < 1e-3
                            and result["row_mean_residual_max"] < 1.0
                            and result["lighting_offset_max"] > 4.0)
    return result


def center_against_reference(data_dir: Path, device: str, batch: int, workers: int) -> dict:
    """The val split's first batch, center crops, from DALI on `device` and from the
    reference loader on the CPU: the same samples in the same order, and pixels that agree
    up to the decoders, on the photos of the check's shards."""
    got = {}
    for backend in ("dali", "reference"):
        loader = open_loader(data_dir, backend, device if backend == "dali" else "cpu", batch,
                             workers, mode="center", split="val")
        loader.set_epoch(0)
        it = iter(loader)
        images, labels, valid = next(it)
        got[backend] = (images.float().cpu().numpy(), labels.cpu().numpy(), valid.cpu().numpy())
        del it
        gc.collect()
    (a, la, va), (b, lb, vb) = got["dali"], got["reference"]
    err = np.abs(a - b)[va & vb]
    result = {"rows": int((va & vb).sum()), "same_labels": bool(np.array_equal(la, lb)),
              "mean_abs": round(float(err.mean()), 4), "p999_abs": round(float(np.quantile(err, 0.999)), 3),
              "max_abs": round(float(err.max()), 3)}
    result["passed"] = bool(result["same_labels"] and result["rows"] > 0 and result["mean_abs"] < 3.0
                            and result["p999_abs"] < 48)
    return result
