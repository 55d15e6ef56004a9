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
EOI = b"\xff\xd9"  # a JPEG's last two bytes: its end-of-image marker
# Where a sample's label follows its JPEG closer than this (the JPEG's padding and the
# label's tar header: under 1 KB), one read takes both, and what lies between, into its row.
MAX_GAP = 4096
# Zeros written after each JPEG in its row, so a decoder that reads on past a JPEG's
# length (a damaged one) meets what it would meet at the end of an exact buffer: nothing.
TAIL = 64


class SampleBytes:
    """Random access to sample g (its global number, shard file order) of a split."""

    def __init__(self, tars: list[Path], starts: np.ndarray, table: np.ndarray, max_open: int = MAX_OPEN_SHARDS):
        self.tars, self.starts, self.table, self.max_open = tars, starts, table, max_open
        self._fds: collections.OrderedDict[int, int] = collections.OrderedDict()

    def _fd(self, s: int, keep: int = 1) -> int:
        """Shard s's open file; `keep` files opened last stay open (a batch's shards, until `_trim`)."""
        if s in self._fds:
            self._fds.move_to_end(s)
        else:
            while len(self._fds) >= max(self.max_open, keep):
                os.close(self._fds.popitem(last=False)[1])
            self._fds[s] = os.open(self.tars[s], os.O_RDONLY)
        return self._fds[s]

    def _trim(self) -> None:
        while len(self._fds) > self.max_open:
            os.close(self._fds.popitem(last=False)[1])

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
        """Samples `ids` for a batch, as one dense (n, stride) uint8 array in `buffer` (where
        it is large enough, else a new one): row i holds sample i's JPEG from its first
        byte (`blank` in the rows where `blank_rows` is set), then what follows it in the
        shard, zeros after a short or blank one (`pipeline.dali.read_nodes`). Also the first
        `label_width` bytes of the samples' label fields, left-aligned in the rows of an
        (n, label_width) array, and the fields' lengths. Returns (rows, jpeg lengths
        (int32), fields, field lengths, buffer).

        One `preadv` a sample (it copies without the GIL): where the label follows its JPEG
        (preprocess's order, less than MAX_GAP between), the JPEG, the gap and the label in
        one read into the row, the label fields then gathered from the rows at once. The
        rest (blank rows, a label elsewhere, a shard shorter than its index says) is read
        sample by sample, as rare as damage."""
        n = len(ids)
        rows = self.table[ids]
        off, jpeg = rows[:, IMAGE_OFFSET], rows[:, IMAGE_SIZE_BYTES]
        label_off, sizes = rows[:, LABEL_OFFSET], rows[:, LABEL_SIZE_BYTES].astype(np.int64)
        heads = np.minimum(sizes, label_width)
        gap = label_off - off - jpeg
        joint = (gap >= 0) & (gap <= MAX_GAP)
        if blank_rows is not None:
            joint &= ~blank_rows
        reads = np.where(joint, label_off + heads - off, jpeg)  # the bytes read into each row
        lengths = jpeg.astype(np.int32)
        if blank_rows is not None:
            lengths[blank_rows] = len(blank)
            reads[blank_rows] = 0
        stride = max(int(reads.max()) if n else 0, int(lengths.max()) if n else 0) + TAIL
        if buffer is None or len(buffer) < n * stride:
            buffer = np.empty(n * stride + n * stride // 4, np.uint8)  # room for the next, larger batch
        dense = buffer[: n * stride].reshape(n, stride)
        shards = np.searchsorted(self.starts, ids, side="right") - 1
        used, which = np.unique(shards, return_inverse=True)
        fds = [self._fd(int(s), keep=len(used)) for s in used]
        fd_rows = [fds[k] for k in which.tolist()]
        mem = memoryview(buffer)
        got = [os.preadv(fd, [mem[a : a + r]], o) if r else 0 for fd, a, r, o in
               zip(fd_rows, range(0, n * stride, stride), reads.tolist(), off.tolist())]  # fmt: skip
        self._trim()
        # The label fields, from the rows that hold them.
        pos = (label_off - off)[:, None] + np.arange(label_width)
        fields = dense[np.arange(n)[:, None], np.clip(pos, 0, stride - 1)]
        fields[np.arange(label_width) >= heads[:, None]] = 0
        for i in np.flatnonzero(~joint | (np.asarray(got) != reads)).tolist():
            fd, field = fd_rows[i], fields[i]
            field[:] = 0
            os.preadv(fd, [field[: heads[i]]], int(label_off[i]))
            if blank_rows is not None and blank_rows[i]:
                dense[i, : len(blank)] = blank
            else:  # short where a shard is shorter than its index says: what is there, for the decoder to refuse
                lengths[i] = min(got[i], int(jpeg[i]))
        # A JPEG that does not end in its end marker (`preprocess shard` writes whole ones)
        # may be cut, and what follows it in the row could complete it for the decoder (a
        # decoder only fails a cut JPEG where its buffer ends): its row is cleared, so the
        # batch fails and the loader's recovery names it damaged (`pipeline.badinput`).
        last = np.maximum(lengths.astype(np.int64), 2)[:, None] - (2, 1)
        ended = np.all(dense[np.arange(n)[:, None], last] == tuple(EOI), axis=1) & (lengths >= 2)
        for i in np.flatnonzero(~ended).tolist():
            dense[i] = 0
        dense[np.arange(n)[:, None], lengths[:, None] + np.arange(TAIL)] = 0
        return dense, lengths, fields, sizes, buffer

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
