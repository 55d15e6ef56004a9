"""One code path for a single process and for DDP under torchrun: `trainer train` and the
analysis tools (`trainer evaluate`, `predict`, `neighbors`) join the process group here.

`torchrun --nproc-per-node G [--nnodes N --rdzv-backend c10d --rdzv-endpoint HOST:PORT]
-m trainer train ...` sets RANK/WORLD_SIZE/LOCAL_RANK; a rank's GPU is chosen from what
the process sees (`trainer.run.devicemap`: all the node's GPUs or one); without them the run is a world of
one and every collective here is a no-op. Control traffic (commands, stop requests, the
checkpoint's per-rank RNG and data positions) goes over a gloo group on the CPU, so it
never waits on the GPU stream.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from trainer.run.devicemap import ddp_device_ids, rank_device


@dataclass
class World:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    control_group: object = None  # gloo group for CPU tensors and objects

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def check_device(device: str) -> torch.device:
    """`device` as torch's, or a UsageError (one line, exit 2) where this host lacks it."""
    from common.argtypes import UsageError

    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"--device {device}, but torch sees no CUDA device: use --device cpu, or auto")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise UsageError(f"--device {device}, but torch sees {torch.cuda.device_count()} CUDA device(s)")
    return dev


def setup(device: str | None = "auto") -> World:
    """Pick the device and, under torchrun, join the process group (nccl on GPU, gloo on CPU):
    the one set-up for `trainer train` and the analysis tools. `device` is auto (or None),
    cpu, cuda, or cuda:N in a single process (under torchrun a rank's GPU is
    `trainer.run.devicemap.rank_device`'s: LOCAL_RANK when it sees them all, 0 when it sees one)."""
    if device in (None, "auto"):
        device = "cuda" if torch.cuda.is_available() else "cpu"
    on_gpu = check_device(device).type == "cuda"
    if "RANK" not in os.environ or int(os.environ.get("WORLD_SIZE", "1")) == 1:
        if on_gpu and torch.device(device).index is None:
            return World(device=torch.device("cuda", torch.cuda.current_device()))
        return World(device=torch.device(device))
    rank, world_size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    joined = dist.is_initialized()  # a caller in the same process joined first: share its group
    if on_gpu:
        dev = rank_device(local_rank, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
        torch.cuda.set_device(dev)  # pinned memory and a bare "cuda" follow it
        if not joined:
            dist.init_process_group("nccl", device_id=dev)
        group = dist.new_group(backend="gloo")
    else:
        if not joined:
            dist.init_process_group("gloo")
        group, dev = dist.group.WORLD, torch.device("cpu")
    return World(rank, world_size, local_rank, dev, group)


_calls = 0  # this process's collectives on the control group, for the --trace hook's count


def collective_calls() -> int:
    """How many collectives this process has run through the helpers below (DDP's own
    gradient all-reduce is not among them): `--trace` records it per step."""
    return _calls


def _counted(world: World) -> bool:
    global _calls
    if world.distributed:
        _calls += 1
    return world.distributed


def teardown(world: World) -> None:
    if world.distributed and dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_sum(world: World, values: torch.Tensor) -> torch.Tensor:
    """Sum a small CPU tensor over ranks (counts, control flags)."""
    if _counted(world):
        dist.all_reduce(values, op=dist.ReduceOp.SUM, group=world.control_group)
    return values


def all_gather_object(world: World, obj) -> list:
    if not _counted(world):
        return [obj]
    out = [None] * world.world_size
    dist.all_gather_object(out, obj, group=world.control_group)
    return out


def barrier(world: World) -> None:
    if _counted(world):
        dist.barrier(group=world.control_group)


def wrap_ddp(model: torch.nn.Module, device: torch.device, *, grad_bf16: bool = False) -> torch.nn.Module:
    """The model under DDP on the rank's device. With `grad_bf16` the gradients are
    all-reduced in bf16 (torch's bf16_compress_hook: half the bytes, averaged in fp32 after),
    a non-paper choice for slow links (benchmarks/scaling_model.py)."""
    net = torch.nn.parallel.DistributedDataParallel(model, device_ids=ddp_device_ids(device),
                                                    gradient_as_bucket_view=True)
    if grad_bf16:
        net.register_comm_hook(None, _bf16_gradients)
    return net


def _bf16_gradients(state, bucket):
    # torch's own hook, under another name: DDP refuses it by name off NCCL, though gloo
    # reduces bf16 as well (the CPU tests run it there).
    from torch.distributed.algorithms.ddp_comm_hooks.default_hooks import bf16_compress_hook

    return bf16_compress_hook(state, bucket)
