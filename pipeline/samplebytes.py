"""A sample's stored bytes (JPEG, label, key), read through the split's offsets table.

The one reader of a sample's bytes for both backends of `pipeline.make_loader`: the
reference loader's workers (`pipeline.reference.ShardReader` decodes on top of it) and the
DALI backend's batch source (`pipeline.dalisource`: a batch's JPEGs into one buffer, which
DALI reads in place). One `pread` a member, through a small cache of open shard files.
"""

from __future__ import annotations

import collections
import os
from pathlib import Path

import numpy as np

from preprocess.offsetstable import IMAGE_OFFSET, IMAGE_SIZE_BYTES, LABEL_OFFSET, LABEL_SIZE_BYTES

# Shard files kept open at once. A rank's batch touches up to batch-size shards of 1,282,
# and a persistent worker would otherwise end up holding them all (over a common
# `ulimit -n` of 1024); reopening one costs microseconds against a decode's ms.
MAX_OPEN_SHARDS = 64
TAR_HEADER = 512
# Where a sample's label follows its JPEG, one read takes both and drops what lies between
# (the JPEG's padding and the label's tar header: under 1 KB) into this scratch buffer.
_GAP = np.empty(4096, np.uint8)


class SampleBytes:
    """Random access to sample g (its global number, shard file order) of a split."""

    def __init__(self, tars: list[Path], starts: np.ndarray, table: np.ndarray, max_open: int = MAX_OPEN_SHARDS):
        self.tars, self.starts, self.table, self.max_open = tars, starts, table, max_open
        self._fds: collections.OrderedDict[int, int] = collections.OrderedDict()

    def _fd(self, s: int) -> int:
        if s in self._fds:
            self._fds.move_to_end(s)
        else:
            if len(self._fds) >= self.max_open:
                os.close(self._fds.popitem(last=False)[1])
            self._fds[s] = os.open(self.tars[s], os.O_RDONLY)
        return self._fds[s]

    def shard_of(self, g: int) -> int:
        return int(np.searchsorted(self.starts, g, side="right") - 1)

    def jpeg_bytes(self, g: int) -> bytes:
        """Sample g's stored JPEG, as it is in the shard."""
        row = self.table[g]
        return os.pread(self._fd(self.shard_of(g)), int(row[IMAGE_SIZE_BYTES]), int(row[IMAGE_OFFSET]))

    def label_bytes(self, g: int) -> bytes:
        row = self.table[g]
        return os.pread(self._fd(self.shard_of(g)), int(row[LABEL_SIZE_BYTES]), int(row[LABEL_OFFSET]))

    def batch_into(self, ids: np.ndarray, buffer: np.ndarray | None, label_width: int,
                   blank_rows: np.ndarray | None = None, blank: np.ndarray | None = None):
        """Samples `ids` for a batch: their JPEGs read into one buffer (`buffer` where it is
        large enough, else a new one; a `preadv` each, which copies without the GIL), as
        one view a sample, with `blank` in the rows where `blank_rows` is set; the first
        `label_width` bytes of their label fields, left-aligned in the rows of an
        (n, label_width) array; and the fields' lengths. Returns (views, fields, sizes, buffer)."""
        rows = self.table[ids]
        jpeg_sizes = rows[:, IMAGE_SIZE_BYTES].copy()
        if blank_rows is not None:
            jpeg_sizes[blank_rows] = len(blank)
        ends = np.cumsum(jpeg_sizes)
        total = int(ends[-1]) if len(ends) else 0
        if buffer is None or len(buffer) < total:
            buffer = np.empty(total + total // 4, np.uint8)  # room for the next, larger batch
        sizes = rows[:, LABEL_SIZE_BYTES].astype(np.int64)
        fields = np.zeros((len(ids), label_width), np.uint8)
        shards = (np.searchsorted(self.starts, ids, side="right") - 1).tolist()
        skip = blank_rows.tolist() if blank_rows is not None else [False] * len(shards)
        views = []
        for field, s, a, e, off, label_off, head, blank_row in zip(
                fields, shards, (ends - jpeg_sizes).tolist(), ends.tolist(), rows[:, IMAGE_OFFSET].tolist(),
                rows[:, LABEL_OFFSET].tolist(), np.minimum(sizes, label_width).tolist(), skip):  # fmt: skip
            fd, view = self._fd(s), buffer[a:e]
            gap = label_off - off - (e - a)
            # The label follows its JPEG (preprocess's order): one read takes both.
            joint = not blank_row and 0 <= gap <= len(_GAP)
            if not joint or os.preadv(fd, [view, _GAP[:gap], field[:head]], off) != e - a + gap + head:
                os.preadv(fd, [field[:head]], label_off)
                if blank_row:
                    view[:] = blank
                else:  # a shard shorter than its index says: what is there, for the decoder to refuse
                    view = view[: os.preadv(fd, [view], off)]
            views.append(view)
        return views, fields, sizes, buffer

    def key(self, g: int) -> str:
        """Sample g's key, from its JPEG member's tar header."""
        header = os.pread(self._fd(self.shard_of(g)), 100, int(self.table[g, IMAGE_OFFSET]) - TAR_HEADER)
        return header.split(b"\0", 1)[0].decode(errors="replace").split(".", 1)[0]

    def name(self, g: int) -> str:
        """"shard:key" of a sample (read only for reports)."""
        # A shard cut short after it was indexed has no header to name the sample by.
        return f"{Path(self.tars[self.shard_of(g)]).name}:{self.key(g) or f'#{g}'}"

    def close(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()
