"""A sample's stored bytes (JPEG, label, key), read through the split's offsets table.

The one reader of a sample's bytes for both backends of `pipeline.make_loader`: the
reference loader's workers (`pipeline.reference.ShardReader` decodes on top of it) and the
DALI backend's batch source (`pipeline.dalisource`: a batch's JPEGs as views into the
mapped shards, which DALI reads without a copy in the rank). One `pread` a member, through
a small cache of open shard files, or one view into a small cache of mapped ones.
"""

from __future__ import annotations

import collections
import mmap
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
        self._maps: collections.OrderedDict[int, np.ndarray] = collections.OrderedDict()

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

    def _map(self, s: int) -> np.ndarray:
        """Shard s mapped read-only as a uint8 array, through a small cache: a mapping
        dropped from it stays until the last view into it (a batch DALI holds) is freed."""
        maps = self._maps
        if s in maps:
            maps.move_to_end(s)
        else:
            if len(maps) >= self.max_open:
                maps.popitem(last=False)
            with open(self.tars[s], "rb") as f:
                maps[s] = np.frombuffer(mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ), np.uint8)
        return maps[s]

    def batch_views(self, ids: np.ndarray, label_width: int, blank_rows: np.ndarray | None = None,
                    blank: np.ndarray | None = None) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
        """Samples `ids` for a batch, nothing copied but the labels' first bytes: their JPEGs
        as views into their mapped shards (DALI's threads read the pages), with `blank` in
        the rows where `blank_rows` is set; the first `label_width` bytes of their label
        fields, left-aligned in the rows of an (n, label_width) array; and the fields' lengths."""
        rows = self.table[ids]
        shard_of = np.searchsorted(self.starts, ids, side="right") - 1
        maps = {s: self._map(s) for s in np.unique(shard_of).tolist()}  # a batch's shards, once each
        sizes = rows[:, LABEL_SIZE_BYTES].astype(np.int64)
        fields = np.zeros((len(ids), label_width), np.uint8)
        heads = np.minimum(sizes, label_width).tolist()
        views = []
        for j, (s, off, n, label_off, head) in enumerate(zip(
                shard_of.tolist(), rows[:, IMAGE_OFFSET].tolist(), rows[:, IMAGE_SIZE_BYTES].tolist(),
                rows[:, LABEL_OFFSET].tolist(), heads)):  # fmt: skip
            shard = maps[s]
            fields[j, :head] = shard[label_off : label_off + head]
            view = shard[off : off + n]
            if len(view) != n:
                raise OSError(f"{self.tars[s]}: ends before byte {off + n} (the shard changed after its index was made?)")
            views.append(view)
        if blank_rows is not None:
            for j in np.flatnonzero(blank_rows).tolist():
                views[j] = blank
        return views, fields, sizes

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
        self._maps.clear()
