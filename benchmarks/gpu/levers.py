"""Where the bare training step's time goes, one lever at a time, in the same call.

Each variant is the paper's model at batch 128 on a batch already on the GPU, built and
timed on its own with the same budget; the ratios are over the variant the trainer runs
(`product`) and over the trainer as it was before these levers (`before`).
The levers: torch's `nn.LocalResponseNorm` against `trainer.run.lrn`; `cudnn.benchmark`;
channels-last or NCHW; CUDA graphs of the forward and backward; and, for scale, one
column (groups=1, another model: more weights). One convolution per column instead of
cuDNN's grouped kernels was measured at 1.00x on an H100 and dropped (benchmarks/README.md).
"""

from __future__ import annotations

import contextlib

import torch
from torch.nn import functional as F

from trainer.run.model import AlexNet, configure_cuda
from trainer.run.optim import PaperSGD

from gpu.timing import Budget, sync, throughput

# name -> the switches it changes from `product`, what the trainer runs on a GPU;
# `before` is the trainer before this check's levers (the first H100 run's figures).
VARIANTS = {
    "before": {"torch_lrn": True, "benchmark": False},
    "product": {},
    "torch_lrn": {"torch_lrn": True},
    "no_cudnn_benchmark": {"benchmark": False},
    "nchw": {"channels_last": False},
    "cuda_graphs": {"graphed": True},
    "one_column": {"groups": 1},
}


@contextlib.contextmanager
def _switches(benchmark):
    old_bench = torch.backends.cudnn.benchmark
    configure_cuda()  # the product's settings, then the variant's changes
    if benchmark is not None:
        torch.backends.cudnn.benchmark = benchmark
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = old_bench


def _model(classes, width, device, channels_last, groups, torch_lrn):
    torch.manual_seed(0)
    model = AlexNet(num_classes=classes, width=width, groups=groups)
    if torch_lrn:  # the model before trainer.run.lrn: torch's alpha is the paper's times n
        model.norm1 = torch.nn.LocalResponseNorm(5, 5 * 1e-4, 0.75, 2.0)
        model.norm2 = torch.nn.LocalResponseNorm(5, 5 * 1e-4, 0.75, 2.0)
    model = model.to(device, memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    return model.train(), PaperSGD(model.parameters())


def _step_fn(model, opt, images, labels, amp, graphed):
    net, kind = model, images.device.type
    if graphed:
        if kind != "cuda":
            raise RuntimeError("CUDA graphs need a CUDA device")
        # Autocast's weight cache must be off while capturing (torch's CUDA graphs notes).
        with torch.autocast(kind, dtype=torch.bfloat16, enabled=amp, cache_enabled=False):
            net = torch.cuda.make_graphed_callables(model, (images,))

    def step():
        with torch.autocast(kind, dtype=torch.bfloat16, enabled=amp, cache_enabled=not graphed):
            logits = net(images)
        loss = F.cross_entropy(logits.float(), labels)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return step


def measure(name, classes, width, batch, device, amp, channels_last, budget: Budget) -> dict:
    v = VARIANTS[name]
    cl = v.get("channels_last", channels_last)
    with _switches(v.get("benchmark")):
        model, opt = _model(classes, width, device, cl, v.get("groups", 2), v.get("torch_lrn", False))
        fmt = torch.channels_last if cl else torch.contiguous_format
        images = torch.randn(batch, 3, 224, 224, device=device).contiguous(memory_format=fmt)
        labels = torch.randint(0, classes, (batch,), device=device)
        step = _step_fn(model, opt, images, labels, amp, v.get("graphed", False))
        result = throughput(step, batch, budget, device)
        sync(device)
    result["switches"] = v
    return result


def run(classes, width, batch, device, amp, channels_last, budget: Budget, log) -> dict:
    """Every variant; one that fails is recorded with its error and the rest go on."""
    results = {}
    for name in VARIANTS:
        try:
            results[name] = measure(name, classes, width, batch, device, amp, channels_last, budget)
        except Exception as exc:  # a lever that cannot run here must not cost the others
            results[name] = {"error": f"{type(exc).__name__}: {exc}"[:300]}
        if device.startswith("cuda"):
            torch.cuda.empty_cache()  # each variant starts from the same free memory
        log(f"  {name:<20} {results[name].get('items_per_s', results[name].get('error'))}")
    base, old = (results.get(k, {}).get("items_per_s") for k in ("product", "before"))
    for r in results.values():
        if "items_per_s" in r:
            r["over_product"] = round(r["items_per_s"] / base, 3) if base else None
            r["over_before"] = round(r["items_per_s"] / old, 3) if old else None
    return results
