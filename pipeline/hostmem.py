"""Host memory of the loaders: fresh tensors for whole batches, backed by transparent huge
pages where the kernel allows (`pipeline.dali` and `pipeline.host_normalize`, for each batch
they hand out) or in shared memory (`pipeline.reference`, for each batch a worker sends the
rank); and `return_large_frees`, which the DALI loader sets so that the buffers of a
pipeline it drops go back to the system."""

from __future__ import annotations

import ctypes
import math
import sys

import torch


def _libc(name: str, argtypes: list):
    """A libc function, or None where there is none to call (not Linux, not glibc)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        fn_ = getattr(ctypes.CDLL(None, use_errno=True), name)
    except (OSError, AttributeError):
        return None
    fn_.argtypes, fn_.restype = argtypes, ctypes.c_int
    return fn_


_MADVISE = _libc("madvise", [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int])
_MADV_HUGEPAGE = 14  # Linux
_HUGE = 1 << 21
_MALLOPT = _libc("mallopt", [ctypes.c_int, ctypes.c_int])  # glibc only
_M_MMAP_THRESHOLD = -3  # glibc's malloc.h
# A block from this size up that the arena has no free room for gets its own mapping,
# unmapped when freed, instead of growing the heap or a thread arena. DALI's reader
# reserves 1 MiB for every sample it holds (`tensor_init_bytes`, its default; 4,096 in the
# shuffle buffer) and writes only the sample's first pages: mapped, only those pages count
# and all of them leave with the pipeline. Its decoded images (a 224x224 window is 147 KiB)
# stay below and come from the arenas; its batch buffers (9.6 MB of uint8 windows at batch
# 64) and parsed index (about 0.35 KB a sample in a few growing vectors) are above.
MMAP_THRESHOLD = 1 << 20


def return_large_frees() -> bool:
    """Fix glibc's mmap threshold at MMAP_THRESHOLD, so that freed large blocks go back to
    the system. glibc starts at 128 KiB and raises the threshold to the size of every
    mapped block freed (up to 32 MiB); after the DALI loader's first pipeline was dropped,
    the next pipelines' index and batch buffers came from the heap, which keeps them after
    they are freed, and the rank's RSS rose with every epoch start (one of 8 ranks at
    1.28 M: 627 -> 791 MB over 6). A 4 MiB threshold stopped that but left the reader's
    1 MiB sample reservations in the thread arenas, where each pipeline's samples touched
    other pages of them, resident still once freed: the arenas held 26 MB after the first
    epoch start and 80-200 MB later, some single starts ~70 MB above the others, and at
    160 k samples they kept rising (a lone rank, 12 starts: 594 -> 784 MB, +15 MB an
    epoch). At 1 MiB the arenas stay at 8-19 MB: 12 starts at 160 k span 37-42 MB, the
    last 6 of them 11-13 MB; at 1.28 M 25-34 MB for a lone rank and 13 MB for rank 7 of 8
    (benchmarks/README.md, "The last four gaps", item 2). Epoch starts and images/s were
    the same within this shared VM's noise. Fewer arenas (M_ARENA_MAX 1 or 2) made it
    worse, the main heap growing 100-200 MB an epoch; malloc_trim after each release only
    halved the scatter. Process-wide and idempotent; False where there is no glibc mallopt
    (the threshold stays dynamic)."""
    return _MALLOPT is not None and _MALLOPT(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1


def empty_host(shape, dtype: torch.dtype) -> torch.Tensor:
    """torch.empty on the CPU, asking for transparent huge pages before first touch.

    A batch is ~77 MB of fresh memory each step; faulting it in 4 KiB pages cost more than
    the copy itself (measured ~30 ms vs ~5 ms a batch on a 2-core VM). Only a hint: where
    the kernel says no (THP off, not Linux) the tensor is an ordinary one.
    """
    out = torch.empty(shape, dtype=dtype)
    nbytes = out.numel() * out.element_size()
    if _MADVISE is not None and nbytes >= 2 * _HUGE:
        start = (out.data_ptr() + _HUGE - 1) & ~(_HUGE - 1)
        end = (out.data_ptr() + nbytes) & ~(_HUGE - 1)
        _MADVISE(start, end - start, _MADV_HUGEPAGE)  # failure is harmless: normal pages
    return out


def empty_shared(shape, dtype: torch.dtype) -> torch.Tensor:
    """A tensor in fresh shared memory (zero-filled, pages touched only when written), for a
    DataLoader worker's batch: torch moves an ordinary tensor into shared memory when a
    worker sends it, a copy of the whole batch (77 MB at 128 images) held beside the first
    one until it is done. torch's own default_collate allocates worker batches this way."""
    numel = math.prod(shape)
    storage = torch.empty(0, dtype=dtype)._typed_storage()._new_shared(numel, device="cpu")
    return torch.empty(0, dtype=dtype).new(storage).view(shape)
