"""Under DDP each rank's loaders run on that rank's GPU: `Trainer.make_loader`'s config
for rank k names "cuda:k", and the DALI pipelines that loader defines (the epoch's, and
the damaged-sample decoder's) get device_id k. Needs no GPU: the pipelines are defined,
not built, and World is what `trainer.run.distributed.setup` returns under torchrun."""

from __future__ import annotations

import pytest
import torch

from pipeline import make_loader
from trainer.run.config import TrainConfig
from trainer.run.distributed import World
from trainer.run.loaders import train_loader_config

MODES = [("train", "train"), ("val", "center"), ("val", "tencrop")]


@pytest.mark.parametrize("rank", [0, 1, 3])
def test_rank_k_loaders_use_gpu_k(demo_shards, tmp_path, rank):
    cfg = TrainConfig(data=str(demo_shards), run_dir=str(tmp_path), batch_size=32, num_workers=1)
    world = World(rank=rank, world_size=4, local_rank=rank, device=torch.device("cuda", rank))
    for split, mode in MODES:
        config = train_loader_config(cfg, world, split, mode, channels_last=True)
        assert config.device == f"cuda:{rank}" and config.backend == "dali"  # auto, on a GPU
        assert (config.rank, config.world_size) == (rank, 4)
        loader = make_loader(config)
        assert loader.backend == "dali" and loader.device == torch.device("cuda", rank)
        assert loader.pipeline().device_id == rank
        assert loader.recovery.decoder().pipeline().device_id == rank


def test_cpu_world_gets_cpu_loaders(demo_shards, tmp_path):
    cfg = TrainConfig(data=str(demo_shards), run_dir=str(tmp_path), batch_size=32, num_workers=1)
    config = train_loader_config(cfg, World(), "train", "train", channels_last=False)
    assert config.device == "cpu" and config.batch_size == 32 and config.backend == "reference"
    assert train_loader_config(cfg, World(), "val", "tencrop", False).batch_size == 8


def test_num_workers_zero_means_auto(demo_shards, tmp_path, monkeypatch):
    from pipeline.loader import DALI_GPU_THREADS, OTHER_WORKERS

    monkeypatch.setattr("os.sched_getaffinity", lambda pid: set(range(64)))
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    cfg = TrainConfig(data=str(demo_shards), run_dir=str(tmp_path), batch_size=32)
    assert cfg.num_workers == 0
    gpu = World(rank=1, world_size=4, local_rank=1, device=torch.device("cuda", 1))
    assert train_loader_config(cfg, gpu, "train", "train", True).num_workers == DALI_GPU_THREADS
    assert train_loader_config(cfg, World(), "train", "train", False).num_workers == OTHER_WORKERS
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "8")  # 8 cores a GPU: 6 threads, the feed thread, the trainer
    assert train_loader_config(cfg, gpu, "train", "train", True).num_workers == 6
    explicit = TrainConfig(data=str(demo_shards), run_dir=str(tmp_path), batch_size=32, num_workers=3)
    assert train_loader_config(explicit, gpu, "train", "train", True).num_workers == 3
