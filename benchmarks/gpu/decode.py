"""JPEG decode alone: `torchvision.io.decode_jpeg` on a batch of the shards' JPEGs.

On the GPU this is nvJPEG through torchvision, the part of the pipeline DALI would do on
the GPU; it gives a decode figure even where DALI could not be brought over.
"""

from __future__ import annotations

import itertools
from pathlib import Path

from gpu.timing import Budget, throughput


def read_jpegs(data_dir: Path, limit: int) -> list[bytes]:
    """The first `limit` stored JPEGs of the train split, as the shards hold them."""
    from pipeline.inorder import SplitSamples

    return [s.image for s in itertools.islice(SplitSamples(data_dir, "train").read(decode=bytes), limit)]


def decode_throughput(jpegs: list[bytes], batch: int, device: str, budget: Budget) -> dict:
    import torch
    from torchvision.io import decode_jpeg

    data = [torch.frombuffer(bytearray(b), dtype=torch.uint8) for b in jpegs]
    batches = [data[i : i + batch] for i in range(0, len(data) - batch + 1, batch)] or [data]
    state = {"i": 0}

    def step():
        chunk = batches[state["i"] % len(batches)]
        state["i"] += 1
        decode_jpeg(chunk, device=device)  # a list in, one batched nvJPEG call on the GPU

    result = throughput(step, len(batches[0]), budget, device)
    first = decode_jpeg(batches[0][:1], device=device)[0]
    result["shape"] = list(first.shape)
    return result
