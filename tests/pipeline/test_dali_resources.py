"""Which GPU a DALI loader uses, how many DALI pipelines it holds at once, and whether the
memory of a dropped one leaves the process.

No GPU is needed: a DALI pipeline can be defined for any device without being built, so
the tests read the `device_id` that each pipeline would hand to DALI.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from pipeline import make_loader
from pipeline.dali import dali_device_id

REPO = Path(__file__).resolve().parents[2]


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
    assert loader.pipeline().device_id == 1  # the epoch's pipeline
    assert loader.recovery.decoder().pipeline().device_id == 1  # damaged-sample tests


def test_a_bare_cuda_loader_is_pinned_to_the_current_device(shard_dir, monkeypatch):
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 2)
    loader = make_loader(shard_dir, batch_size=8, backend="dali", device="cuda")
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)  # later changes do not move it
    assert loader.device == torch.device("cuda", 2)
    assert loader.pipeline().device_id == 2
    assert loader.recovery.decoder().pipeline().device_id == 2


def test_cpu_loader_builds_cpu_pipelines(shard_dir):
    loader = make_loader(shard_dir, batch_size=8, backend="dali")
    assert loader.device == torch.device("cpu")
    assert loader.pipeline().device_id is None
    assert loader.recovery.decoder().pipeline().device_id is None


@pytest.mark.parametrize("split, mode", [("train", "train"), ("val", "center")])
def test_one_pipeline_serves_every_epoch_of_the_run(shard_dir, split, mode, monkeypatch):
    """Issue 12: one pipeline per rank for the run, train and eval alike (each epoch start
    writes a schedule and resets it), also when the consumer stops at len(loader) without
    exhausting the iterator, as the trainer does; and what each epoch reads is that
    epoch's: the same batches as a loader built for that epoch alone."""
    kw = dict(split=split, mode=mode, batch_size=16, backend="dali", num_workers=1, seed=4)
    loader = make_loader(shard_dir, **kw)
    builds = []
    build = loader.build
    monkeypatch.setattr(loader, "build", lambda: builds.append(1) or build())
    for epoch in range(3):
        loader.set_epoch(epoch)
        batches = iter(loader)  # as the trainer takes them: len(loader) next() calls, no exhaustion
        got = [[t.clone() for t in next(batches)] for _ in range(len(loader))]
        alone = make_loader(shard_dir, **kw)
        alone.set_epoch(epoch)
        want = list(alone)
        alone.close()
        assert len(got) == len(want) == len(loader)
        assert all(torch.equal(a, b) for x, y in zip(got, want) for a, b in zip(x, y)), f"epoch {epoch}"
    assert len(builds) == 1


@pytest.mark.parametrize("split, mode", [("train", "train"), ("val", "center"), ("val", "tencrop")])
def test_a_pass_broken_off_keeps_the_pipeline_and_the_next_pass_is_whole(shard_dir, split, mode):
    """A pass broken off (a `break` after a few batches; one batch before its end, where
    the batches in flight reach the epoch's end) is cut short on the same pipeline, and the
    next pass gives the batches a whole pass gives, for a middle rank too."""
    for rank in (0, 1):
        loader = make_loader(shard_dir, split=split, mode=mode, batch_size=5, backend="dali", num_workers=1,
                             rank=rank, world_size=3)
        first = [[t.clone() for t in batch] for batch in loader]
        pipe = loader.pipe
        for taken in (1, len(loader) - 1):
            batches = iter(loader)
            for _ in range(taken):
                next(batches)
            del batches
            again = [[t.clone() for t in batch] for batch in loader]
            assert loader.pipe is pipe, f"rebuilt after a pass broken off at batch {taken}"
            assert len(again) == len(first)
            assert all(torch.equal(a, b) for x, y in zip(first, again) for a, b in zip(x, y)), taken
        loader.close()


# Allocates, fills and frees a block twice and prints how much of the second one stays
# resident after it is freed (mincore). The first free of a mapped block raises glibc's
# dynamic mmap threshold, so under the default the second block comes from the heap and
# stays, as DALI's buffers did after each epoch's pipeline was dropped. A block allocated
# after it and kept stands for the rest of the process: a heap block is not merely trimmed
# off the heap's top.
_FREED_BLOCK = """
import ctypes, errno, os, sys
if sys.argv[2] == "policy":
    from pipeline.hostmem import return_large_frees
    return_large_frees()
if sys.argv[2] == "dali":
    from pipeline import make_loader
    make_loader(sys.argv[1], batch_size=8, backend="dali", num_workers=1)
libc = ctypes.CDLL(None, use_errno=True)
libc.malloc.restype, libc.malloc.argtypes, libc.free.argtypes = ctypes.c_void_p, [ctypes.c_size_t], [ctypes.c_void_p]
libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_char_p]
page = os.sysconf("SC_PAGE_SIZE")
def resident(start, size):
    lo, hi = -(-start // page) * page, (start + size) // page * page
    vec = ctypes.create_string_buffer((hi - lo) // page)
    if libc.mincore(lo, hi - lo, vec) != 0:
        assert ctypes.get_errno() == errno.ENOMEM  # unmapped: nothing of it is resident
        return 0
    return sum(b & 1 for b in vec.raw) * page
size = int(sys.argv[3])
for _ in range(2):
    block = libc.malloc(size)
    ctypes.memset(block, 1, size)
    libc.malloc(120 << 10)  # below every mmap threshold: from the heap, after the block
    libc.free(block)
print(resident(block, size))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc and /proc")
@pytest.mark.parametrize("size, setter", [(8 << 20, "dali"), (1 << 20, "policy")],
                         ids=["batch buffer, set by the DALI loader", "reader sample reservation"])
def test_a_dali_rank_returns_freed_batch_sized_blocks_to_the_system(shard_dir, size, setter):
    """8 MiB: a batch buffer, returned once a DALI loader exists. 1 MiB: what DALI's reader
    reserves for each sample it holds (`tensor_init_bytes`), kept in the thread arenas under
    a 4 MiB threshold, where the rank then grew by ~15 MB an epoch start. glibc maps a block
    only when the heap has no room for it, which the DALI loader's process (a large heap
    after its imports) has for 1 MiB: that case runs in a fresh process with the policy set."""

    def kept(loader: str) -> int:
        out = subprocess.run([sys.executable, "-c", _FREED_BLOCK, str(shard_dir), loader, str(size)], cwd=REPO,
                             capture_output=True, text=True, check=True, timeout=120)
        return int(out.stdout.split()[-1])

    assert kept("none") >= size // 2  # the default keeps it: the probe measures what it should
    assert kept(setter) < size // 4
