"""A sample's stored bytes (JPEG, label, key), read through the split's offsets table.

The one reader of a sample's bytes for both backends of `pipeline.make_loader`: the
reference loader's workers (`pipeline.reference.ShardReader` decodes on top of it) and the
DALI backend's batch source (`pipeline.dalisource`, a whole batch into one buffer). One
`pread` a member, through a small cache of open shard files.
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

    def read_jpegs(self, ids: np.ndarray, blank_rows: np.ndarray | None = None,
                   blank: np.ndarray | None = None) -> list[np.ndarray]:
        """The JPEGs of samples `ids`, read into one buffer (a `preadv` each, which copies
        without the GIL), as one view a sample; rows where `blank_rows` is set get `blank`."""
        rows = self.table[ids]
        sizes = rows[:, IMAGE_SIZE_BYTES].copy()
        if blank_rows is not None:
            sizes[blank_rows] = len(blank)
        ends = np.cumsum(sizes)
        buf = np.empty(int(ends[-1]) if len(ends) else 0, np.uint8)
        starts = (ends - sizes).tolist()
        views = [buf[a:e] for a, e in zip(starts, ends.tolist())]
        shards = (np.searchsorted(self.starts, ids, side="right") - 1).tolist()
        offsets = rows[:, IMAGE_OFFSET].tolist()
        skip = blank_rows.tolist() if blank_rows is not None else [False] * len(views)
        for view, s, off, blank_row in zip(views, shards, offsets, skip):
            if blank_row:
                view[:] = blank
            elif os.preadv(self._fd(s), [view], off) != len(view):
                raise OSError(f"{self.tars[s]}: short read at {off} (the shard changed after its index was made?)")
        return views

    def read_labels(self, ids: np.ndarray, width: int) -> tuple[np.ndarray, np.ndarray]:
        """The first `width` bytes of the label fields of samples `ids`, left-aligned in rows
        of an (n, width) array, and the fields' lengths."""
        rows = self.table[ids]
        sizes = rows[:, LABEL_SIZE_BYTES].astype(np.int64)
        fields = np.zeros((len(ids), width), np.uint8)
        shards = (np.searchsorted(self.starts, ids, side="right") - 1).tolist()
        for field, s, off, n in zip(fields, shards, rows[:, LABEL_OFFSET].tolist(), sizes.tolist()):
            os.preadv(self._fd(s), [field[: min(n, width)]], off)
        return fields, sizes

    def key(self, g: int) -> str:
        """Sample g's key, from its JPEG member's tar header."""
        header = os.pread(self._fd(self.shard_of(g)), 100, int(self.table[g, IMAGE_OFFSET]) - TAR_HEADER)
        return header.split(b"\0", 1)[0].decode(errors="replace").split(".", 1)[0]

    def name(self, g: int) -> str:
        """"shard:key" of a sample (read only for reports)."""
        return f"{Path(self.tars[self.shard_of(g)]).name}:{self.key(g)}"

    def close(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()
