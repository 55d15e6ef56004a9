"""A scaling model on paper: predicted training images/s of AlexNet on 1, 2, 4, 8 GPUs of
one node and on 2 x 8 GPUs, from the measured one-GPU step and the gradient's size:
`python benchmarks/scaling_model.py [--step-ms 9.36] [--json]`.

No GPU is needed: it predicts, it does not measure. What it needs from a machine is the
one-GPU step time at batch 128 (the GPU check's `train_bare`: 13,676 images/s on an H100,
eager, bf16, channels-last = 9.36 ms; compiled 18,324 = 6.99 ms) and, once a multi-GPU
node is lent, NCCL's measured bus bandwidth to put in place of the stated ones below. On
one GPU DDP all-reduces nothing (a world of one skips it), so the one-GPU step holds no
communication: the model adds all of it.

Assumptions (change them with the flags; each is printed):
  * the gradient is every parameter's: 60,965,224 (trainer.run.model, 1000 classes) x 4 B
    = 244 MB in fp32, half in bf16 (the `--grad-bf16` all-reduce hook);
  * a step's compute scales with the per-GPU batch, except a fixed part (the optimizer's
    update over 61 M parameters, ~0.9 ms on an H100, and launch overhead) that does not;
  * ring all-reduce moves 2 (G-1)/G of the gradient through each GPU's link: NVLink at
    `--nvlink-gbs` (360 GB/s, NCCL's usual bus bandwidth on 8 x H100 SXM, below NVLink 4's
    450 GB/s a direction); across nodes a hierarchical all-reduce sends 2 (N-1)/N of the
    gradient through each node's network, at the stated line rate x 0.9 (one NIC a node:
    the pessimistic case; 8 NICs a node divide that time by up to 8);
  * with overlap, DDP's buckets all-reduce during backward; the FC layers (96% of the
    bytes) finish backward first, so up to `--overlap-fraction` (0.6) of the step's compute
    (the conv layers' backward and the optimizer's wait) hides communication;
  * a small per-GPU batch (16 at 8 GPUs x global 128) runs as efficiently per image as
    128 does: optimistic, an H100 is under-used at 16, so the global-128 rows are upper bounds;
  * the data pipeline keeps up (it did not on the H100: 9,841 fed against 13,702 bare).
Two batch semantics: the paper's global 128 (128/G a GPU) and 128 a GPU (global 128 G,
which needs --lr-scaling linear and warm-up to train as well).
"""

from __future__ import annotations

import argparse
import json

PARAMS = 60_965_224  # trainer.run.model.build_model, 1000 classes, two columns


def allreduce_ms(grad_bytes: float, gpus: int, nodes: int, nvlink_gbs: float, net_gbps: float) -> float:
    if gpus * nodes == 1:
        return 0.0  # a world of one: DDP reduces nothing
    t = 2 * (gpus - 1) / gpus * grad_bytes / (nvlink_gbs * 1e9) if gpus > 1 else 0.0
    if nodes > 1:
        t += 2 * (nodes - 1) / nodes * grad_bytes / (net_gbps / 8 * 0.9 * 1e9)
    return t * 1e3


def step_ms(a, per_gpu: int, comm_ms: float, overlap: bool) -> float:
    compute = a.fixed_ms + (a.step_ms - a.fixed_ms) * per_gpu / 128
    hidden = a.overlap_fraction * compute if overlap else 0.0
    return compute + max(0.0, comm_ms - hidden)


def table(a) -> list[dict]:
    layouts = [(1, 1, "1 GPU"), (2, 1, "2 GPUs, NVLink"), (4, 1, "4 GPUs, NVLink"), (8, 1, "8 GPUs, NVLink"),
               (8, 2, "2 x 8 GPUs, 100 Gb/s"), (8, 2, "2 x 8 GPUs, 400 Gb/s")]
    rows = []
    for gpus, nodes, name in layouts:
        net = 400 if "400" in name else 100
        world = gpus * nodes
        one = world == 1  # nothing to reduce: one row
        for semantics, per_gpu in (("global 128", 128 / world), ("128 a GPU", 128))[: 1 if one else 2]:
            for bf16 in (False, True)[: 1 if one else 2]:
                comm = allreduce_ms(PARAMS * (2 if bf16 else 4), gpus, nodes, a.nvlink_gbs, net)
                for overlap in (False, True)[: 1 if one else 2]:
                    t = step_ms(a, per_gpu, comm, overlap)
                    ips = per_gpu * world / t * 1e3
                    rows.append({"layout": name, "gpus": world, "batch": semantics, "grad": "bf16" if bf16 else "fp32",
                                 "overlap": overlap, "comm_ms": round(comm, 2), "step_ms": round(t, 2),
                                 "images_s": round(ips), "x_one_gpu": round(ips / (128 / a.step_ms * 1e3), 2)})
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--step-ms", type=float, default=9.36, help="one GPU's step at batch 128 (H100 eager: 9.36)")
    p.add_argument("--fixed-ms", type=float, default=0.9, help="the part of a step that does not scale with batch")
    p.add_argument("--nvlink-gbs", type=float, default=360.0, help="NCCL bus bandwidth within a node, GB/s")
    p.add_argument("--overlap-fraction", type=float, default=0.6)
    p.add_argument("--json", action="store_true")
    a = p.parse_args()
    rows = table(a)
    if a.json:
        print(json.dumps({"assumptions": vars(a), "params": PARAMS, "rows": rows}))
        return
    print(f"one GPU: {a.step_ms} ms a step at batch 128 = {128 / a.step_ms * 1e3:,.0f} images/s; gradient "
          f"{PARAMS * 4 / 1e6:.0f} MB fp32; NVLink {a.nvlink_gbs:.0f} GB/s; fixed {a.fixed_ms} ms; "
          f"overlap {a.overlap_fraction:.0%} of compute")
    print("| layout | batch | grad | overlap | all-reduce ms | step ms | images/s | x 1 GPU |")
    print("|---|---|---|---|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['layout']} | {r['batch']} | {r['grad']} | {'yes' if r['overlap'] else 'no'} | {r['comm_ms']} "
              f"| {r['step_ms']} | {r['images_s']:,} | {r['x_one_gpu']} |")


if __name__ == "__main__":
    main()
