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
        """"shard:key" of a sample (read only for reports); "shard@OFFSET" where the tar holds
        no member header at the offset the index gives (the key is unknown, never empty)."""
        shard, offset = Path(self.tars[self.shard_of(g)]).name, int(self.table[g, IMAGE_OFFSET])
        member = self._member_at(self.shard_of(g), offset)
        return f"{shard}:{member[0].split('.', 1)[0]}" if member and member[0] else f"{shard}@{offset - TAR_HEADER}"

    def damage(self, g: int, symptom: str) -> str:
        """Why sample g is damaged, for its report: the byte offset of its JPEG member in its
        shard, and the real cause where the bytes are not what the index says (a truncated
        shard, an index out of step with the tar) rather than the symptom a reader met."""
        s = self.shard_of(g)
        row = self.table[g]
        where = f"at byte {int(row[IMAGE_OFFSET]) - TAR_HEADER}"
        end = os.fstat(self._fd(s)).st_size
        members = (("jpg", int(row[IMAGE_OFFSET]), int(row[IMAGE_SIZE_BYTES])),
                   ("cls", int(row[LABEL_OFFSET]), int(row[LABEL_SIZE_BYTES])))
        for ext, offset, size in members:
            if offset + size > end:
                return (f"{where}: the shard is truncated: it ends at byte {end}, "
                        f"{'inside' if offset < end else 'before'} this sample's .{ext} member (bytes "
                        f"{offset}..{offset + size})")
        for ext, offset, size in members:
            member = self._member_at(s, offset)
            if member is None:
                return (f"{where}: the index file is out of step with the tar: no member header before byte "
                        f"{offset}, where it puts a .{ext} member")
            name, stored = member
            if not name.endswith(f".{ext}") or stored != size:
                return (f"{where}: the index file is out of step with the tar: it puts a .{ext} member of {size} "
                        f"bytes at {offset}, the tar has {name!r} of {stored} bytes there")
        return f"{where}: {symptom}"

    def _member_at(self, s: int, offset: int) -> tuple[str, int] | None:
        """(name, size) of the tar member whose data starts at `offset`, or None when the 512
        bytes before it are not a tar header (their checksum does not add up)."""
        if offset < TAR_HEADER:
            return None
        header = os.pread(self._fd(s), TAR_HEADER, offset - TAR_HEADER)
        if len(header) < TAR_HEADER:
            return None
        try:
            checksum = int(header[148:156].split(b"\0", 1)[0].strip() or b"-1", 8)
            size = int(header[124:136].split(b"\0", 1)[0].strip() or b"0", 8)
        except ValueError:
            return None
        if checksum != sum(header[:148]) + 8 * 32 + sum(header[156:]):
            return None
        return header[:100].split(b"\0", 1)[0].decode(errors="replace"), size

    def close(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()
