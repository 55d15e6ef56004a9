"""A rank's GPU under both layouts a scheduler gives: every process sees the node's GPUs
(rank k takes cuda:k), or each sees only its own (cuda:0 for every rank, Slurm's
--gpus-per-task=1). Simulated on the CPU: torch's CUDA calls are replaced by recorders
only where no GPU exists here; everything after them (the World, the loaders' config,
the DALI pipelines defined for the rank, DDP's device_ids) is the real code."""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist

from pipeline import make_loader
from trainer.run import distributed
from trainer.run.config import TrainConfig
from trainer.run.devicemap import DeviceMapError, ddp_device_ids, rank_gpu
from trainer.run.loaders import train_loader_config


@pytest.mark.parametrize("local_rank, local_world, visible, want", [
    (3, 8, 8, 3),   # all the node's GPUs visible
    (7, 8, 8, 7),
    (3, 8, 1, 0),   # one GPU per task: the scheduler chose it
    (0, 1, 1, 0),
    (1, 2, 4, 1),   # more visible than ranks (two jobs' worth): one each, by local rank
])
def test_rank_gpu(local_rank, local_world, visible, want):
    assert rank_gpu(local_rank, local_world, visible) == want


@pytest.mark.parametrize("local_rank, local_world, visible", [(3, 4, 3), (2, 4, 2), (0, 2, 0)])
def test_a_layout_that_cannot_be_shared_out_is_refused_with_the_numbers(local_rank, local_world, visible):
    with pytest.raises(DeviceMapError, match=f"local rank {local_rank}"):
        rank_gpu(local_rank, local_world, visible)


class FakeCuda:
    """What torch would report on a node with `visible` GPUs, and what setup asked of it."""

    def __init__(self, monkeypatch, visible: int):
        self.set_to, self.nccl_device = None, None
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: visible)
        monkeypatch.setattr(torch.cuda, "set_device", lambda d: setattr(self, "set_to", torch.device(d)))
        monkeypatch.setattr(dist, "is_initialized", lambda: False)
        monkeypatch.setattr(dist, "init_process_group",
                            lambda backend, device_id=None: setattr(self, "nccl_device", (backend, device_id)))
        monkeypatch.setattr(dist, "new_group", lambda backend: "gloo-group")


@pytest.mark.parametrize("visible, want", [(4, 3), (1, 0)])
def test_everything_on_the_rank_follows_the_mapping(demo_shards, tmp_path, monkeypatch, visible, want):
    for k, v in {"RANK": "7", "WORLD_SIZE": "8", "LOCAL_RANK": "3", "LOCAL_WORLD_SIZE": "4"}.items():
        monkeypatch.setenv(k, v)
    cuda = FakeCuda(monkeypatch, visible)
    world = distributed.setup("cuda")
    gpu = torch.device("cuda", want)
    assert world.device == gpu and (world.rank, world.local_rank) == (7, 3)
    assert cuda.set_to == gpu, "pinned memory and a bare 'cuda' follow torch.cuda.set_device"
    assert cuda.nccl_device == ("nccl", gpu)
    assert ddp_device_ids(world.device) == [want]

    cfg = TrainConfig(data=str(demo_shards), run_dir=str(tmp_path), batch_size=64, num_workers=1)
    for split, mode in [("train", "train"), ("val", "center")]:
        loader = make_loader(train_loader_config(cfg, world, split, mode, channels_last=True))
        assert loader.backend == "dali" and loader.device == gpu
        assert loader.pipeline().device_id == want
        assert loader.recovery.decoder().pipeline().device_id == want


def test_a_bad_layout_ends_setup_before_joining(monkeypatch):
    for k, v in {"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "3", "LOCAL_WORLD_SIZE": "4"}.items():
        monkeypatch.setenv(k, v)
    cuda = FakeCuda(monkeypatch, visible=2)
    with pytest.raises(DeviceMapError, match="sees 2 CUDA devices"):
        distributed.setup("cuda")
    assert cuda.set_to is None and cuda.nccl_device is None


def test_cpu_modules_get_no_device_ids():
    assert ddp_device_ids(torch.device("cpu")) is None
