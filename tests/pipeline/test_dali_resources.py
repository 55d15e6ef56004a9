"""Which GPU a DALI loader uses, and how many DALI pipelines it holds at once.

No GPU is needed: a DALI pipeline can be defined for any device without being built, so
the tests read the `device_id` that each pipeline would hand to DALI.
"""

from __future__ import annotations

import weakref

import pytest
import torch

from pipeline import make_loader
from pipeline.dali import dali_device_id


def test_dali_device_id_follows_the_device_string(monkeypatch):
    assert dali_device_id("cpu") is None
    assert dali_device_id("cuda:0") == 0
    assert dali_device_id("cuda:3") == 3
    # A bare "cuda" is torch's current device (set per rank by torch.cuda.set_device), not GPU 0.
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 2)
    assert dali_device_id("cuda") == 2
    with pytest.raises(ValueError, match="CPU or a CUDA device"):
        dali_device_id("meta")


@pytest.mark.parametrize("split, mode", [("train", "train"), ("val", "center"), ("val", "tencrop")])
def test_every_gpu_part_of_a_loader_uses_its_own_device(shard_dir, split, mode):
    loader = make_loader(shard_dir, split=split, mode=mode, batch_size=8, backend="dali", device="cuda:1",
                         rank=1, world_size=2)
    assert loader.backend == "dali"
    assert loader.device == torch.device("cuda", 1)  # to_torch's buffer and stream, finish()'s copies
    assert loader._host_normalize is None  # "cuda:1" is a GPU: the float step runs in DALI
    assert loader.pipeline(loader.plan()).device_id == 1  # the epoch's pipeline
    assert loader.recovery.decoder().pipeline().device_id == 1  # damaged-sample tests


def test_a_bare_cuda_loader_is_pinned_to_the_current_device(shard_dir, monkeypatch):
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 2)
    loader = make_loader(shard_dir, batch_size=8, backend="dali", device="cuda")
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)  # later changes do not move it
    assert loader.device == torch.device("cuda", 2)
    assert loader.pipeline(loader.plan()).device_id == 2
    assert loader.recovery.decoder().pipeline().device_id == 2


def test_cpu_loader_builds_cpu_pipelines(shard_dir):
    loader = make_loader(shard_dir, batch_size=8, backend="dali")
    assert loader.device == torch.device("cpu")
    assert loader.pipeline(loader.plan()).device_id is None
    assert loader.recovery.decoder().pipeline().device_id is None


@pytest.mark.parametrize("split, mode", [("train", "train"), ("val", "center")])
def test_one_pipeline_alive_across_epoch_boundaries(shard_dir, split, mode, monkeypatch):
    """The old epoch's pipeline (on a GPU: its decoder and buffers) is gone before the new
    one is built, without waiting for the garbage collector."""
    loader = make_loader(shard_dir, split=split, mode=mode, batch_size=16, backend="dali", num_workers=1)
    built: list[weakref.ref] = []
    alive_at_build: list[int] = []
    build = loader.build

    def counting_build(*args, **kwargs):
        alive_at_build.append(sum(ref() is not None for ref in built))
        pipe = build(*args, **kwargs)
        built.append(weakref.ref(pipe))
        return pipe

    monkeypatch.setattr(loader, "build", counting_build)
    for epoch in range(3):
        loader.set_epoch(epoch)
        batches = iter(loader)
        next(batches)
        assert sum(ref() is not None for ref in built) == 1
        for _ in batches:
            pass
    assert alive_at_build == [0, 0, 0]
