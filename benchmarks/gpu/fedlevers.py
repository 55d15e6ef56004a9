"""The GPU check's decode levers, timed as DALI-fed training (issue 25): `hw_decoder_load`,
DALI's threads and the loader's prefetch depth, each against the product's settings in the
same step.

DALI's levers were first chosen on the pipeline alone (`dali_levers`), but the hybrid
decoder's GPU share runs on the SMs the training step needs and its CPU share on the cores
the rank's producer thread needs, so the setting that feeds training best may differ. Each
setting gets a loader of its own and the same (compiled, on a GPU) step; the product's
settings run first and again last, so that a drift over the step shows.
"""

from __future__ import annotations

import contextlib

from gpu import loaders, train


@contextlib.contextmanager
def settings(hw_decoder_load: float, prefetch_batches: int):
    """The DALI backend's module settings for one lever, restored after."""
    import pipeline.dali as dali

    saved = dali.HW_DECODER_LOAD, dali.PREFETCH_BATCHES
    dali.HW_DECODER_LOAD, dali.PREFETCH_BATCHES = hw_decoder_load, prefetch_batches
    try:
        yield
    finally:
        dali.HW_DECODER_LOAD, dali.PREFETCH_BATCHES = saved


def variants(product: dict, hw_loads, threads, depths) -> list[tuple[str, dict]]:
    """(name, settings): the product first, then one lever changed at a time, the product last."""
    out = [("product", product)]
    out += [(f"hw_decoder_load={v}", {**product, "hw": v}) for v in hw_loads if v != product["hw"]]
    out += [(f"threads={v}", {**product, "threads": v}) for v in threads if v != product["threads"]]
    out += [(f"prefetch={v}", {**product, "prefetch": v}) for v in depths if v != product["prefetch"]]
    return out + [("product_again", product)]


def run(shards, classes: int, plan, compile: bool, seconds: float, log, step=None) -> dict:
    """Fed-training images/s for each variant, and each one's ratio over the product's."""
    import pipeline.dali as dali

    product = {"hw": dali.HW_DECODER_LOAD, "threads": plan.dali_threads, "prefetch": dali.PREFETCH_BATCHES}
    step = step or train.fed_step(classes, plan.width, plan.device, plan.amp, plan.channels_last, compile)
    out = {"product_settings": product, "compiled": compile, "seconds_each": seconds}
    for name, v in variants(product, plan.fed_hw_loads, plan.fed_threads, plan.fed_depths):
        with settings(v["hw"], v["prefetch"]):
            loader = loaders.open_loader(shards, "dali", plan.device, plan.train_batch, v["threads"],
                                         channels_last=plan.channels_last)
            batches = loaders.epochs(loader)
            for _ in range(loaders.DALI_SKIP):  # the epoch start and the first compile are not the lever's
                step(*next(batches)[1])
            r = train.fed_phase(batches, step, plan.device, seconds, 10**6, drain=False)
            batches.close()
            loader.close()
        out[name] = {**v, "items_per_s": r["items_per_s"], "next_fraction": r["next_fraction"], "steps": r["steps"]}
        log(f"   {name}: {r['items_per_s']} images/s, next() {r['next_fraction']:.1%}")
    base = (out["product"]["items_per_s"] + out["product_again"]["items_per_s"]) / 2
    for name, r in list(out.items()):
        if isinstance(r, dict) and "items_per_s" in r:
            r["over_product"] = round(r["items_per_s"] / base, 3) if base else None
    best = max((k for k, r in out.items() if isinstance(r, dict) and "items_per_s" in r),
               key=lambda k: out[k]["items_per_s"])
    out["best"] = best
    return out
