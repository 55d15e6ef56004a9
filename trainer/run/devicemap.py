"""Which GPU a rank trains on, from what the process sees.

Two layouts are common and both must work without a flag:
  * every process sees every GPU of its node (`torchrun --nproc-per-node 8` on a bare
    node, a PyTorchJob pod with all the node's GPUs): rank LOCAL_RANK takes `cuda:LOCAL_RANK`;
  * each process sees one GPU (Slurm's `--gpus-per-task=1`, one container per GPU): the
    scheduler already chose it, and it is `cuda:0` for every rank.
Anything else (3 GPUs visible to 4 local ranks, say) is refused with the numbers rather
than guessed: two ranks on one GPU, or a GPU left idle, is a silent 2x loss.

Everything on the rank's GPU follows the one index chosen here: `torch.cuda.set_device`
(so pinned host memory and a bare "cuda" are on it), NCCL's `device_id`, the loaders'
device and thus DALI's `device_id`, and DDP's `device_ids`.
"""

from __future__ import annotations

import torch


class DeviceMapError(RuntimeError):
    """The visible GPUs cannot be shared out one to a rank."""


def rank_gpu(local_rank: int, local_world_size: int, visible: int) -> int:
    """The index, among the GPUs this process sees, of the one local rank `local_rank` of
    `local_world_size` trains on."""
    if visible < 1:
        raise DeviceMapError(f"local rank {local_rank} sees no CUDA device")
    if visible == 1:
        return 0  # one GPU per process: the scheduler chose it
    if visible >= local_world_size and 0 <= local_rank < visible:
        return local_rank  # all the node's GPUs visible: one each, by local rank
    raise DeviceMapError(
        f"local rank {local_rank} of {local_world_size} sees {visible} CUDA devices: give every process "
        f"either all the node's GPUs (at least {local_world_size}) or exactly one (e.g. Slurm's "
        f"--gpus-per-task=1, or CUDA_VISIBLE_DEVICES per rank)")


def rank_device(local_rank: int, local_world_size: int, visible: int | None = None) -> torch.device:
    """`rank_gpu` as a torch device, counting the visible GPUs unless told."""
    if visible is None:
        visible = torch.cuda.device_count()
    return torch.device("cuda", rank_gpu(local_rank, local_world_size, visible))


def ddp_device_ids(device: torch.device) -> list[int] | None:
    """DDP's `device_ids`: the rank's one GPU, or None for a CPU module."""
    return [device.index] if device.type == "cuda" else None
