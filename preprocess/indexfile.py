"""DALI index files: the format `wds2idx` writes and `fn.readers.webdataset(index_paths=...)`
reads (v1.2): a first line "v1.2 N", then one line per sample: "EXT OFFSET SIZE NAME" per
member, where OFFSET is where the member's data starts (after its 512-byte tar header).

Part of the data contract (`preprocess.contract` owns the file names and the manifest that
lists them). This module is the only code that reads or writes these files; every reader
checks the version, and a damaged file is a `CorruptError` naming the fix.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from common.tempfiles import replacing
from preprocess.contract import CorruptError, DataError

INDEX_VERSION = "v1.2"
Members = list[tuple[str, int, int, str]]  # one sample: (ext, offset, size, member name) each


def format_index(samples: list[Members]) -> str:
    lines = [f"{INDEX_VERSION} {len(samples)}"]
    for members in samples:
        lines.append(" ".join(f"{ext} {offset} {size} {name}" for ext, offset, size, name in members))
    return "\n".join(lines) + "\n"


def _index_count(head: str) -> int:
    parts = head.split()
    if len(parts) != 2 or parts[0] != INDEX_VERSION or not parts[1].isdigit():
        raise ValueError(f"index header {head!r} is not '{INDEX_VERSION} N'")
    return int(parts[1])


def parse_index(text: str) -> list[Members]:
    """Inverse of `format_index`; raises ValueError on a malformed file."""
    lines = text.splitlines()
    if not lines:
        raise ValueError("empty index file")
    count = _index_count(lines[0])
    samples = []
    for line in lines[1:]:
        parts = line.split()
        if not parts or len(parts) % 4:
            raise ValueError(f"malformed index line {line!r}")
        samples.append(
            [(parts[i], int(parts[i + 1]), int(parts[i + 2]), parts[i + 3]) for i in range(0, len(parts), 4)]
        )
    if len(samples) != count:
        raise ValueError(f"index says {count} samples but lists {len(samples)}")
    return samples


def _index_error(path: Path, err: Exception) -> DataError:
    return CorruptError(f"{path}: {err}; regenerate it with `preprocess shard` (or `wds2idx` for a foreign shard)")


def read_index(path: str | Path) -> list[Members]:
    """Every sample's members, in order (for recovery and verification: Python objects)."""
    path = Path(path)
    try:
        return parse_index(path.read_text())
    except ValueError as err:
        raise _index_error(path, err) from None


def read_index_count(path: str | Path) -> int:
    """The number of samples an index file lists, from its header line alone."""
    path = Path(path)
    with open(path) as f:
        head = f.readline()
    try:
        return _index_count(head.strip())
    except ValueError as err:
        raise _index_error(path, err) from None


def read_index_columns(path: str | Path, exts: tuple[str, ...]) -> np.ndarray:
    """(N, 2 * len(exts)) int64: offset and size of each of `exts` per sample.

    Fixed-width numbers, no per-sample Python objects: what a loader keeps. Files whose
    lines all list the same members (all that `preprocess shard` writes) are parsed with
    numpy in one pass; any other layout goes through `parse_index`.
    """
    path = Path(path)
    text = path.read_bytes()
    head, _, body = text.partition(b"\n")
    try:
        count = _index_count(head.decode("ascii", "replace").strip())
        columns = _uniform_columns(body, count, exts)
        if columns is None:
            columns = _columns_of(parse_index(text.decode()), exts)
    except ValueError as err:
        raise _index_error(path, err) from None
    if len(columns) != count:
        raise _index_error(path, ValueError(f"index says {count} samples but lists {len(columns)}"))
    return columns


def _uniform_columns(body: bytes, count: int, exts: tuple[str, ...]) -> np.ndarray | None:
    """The columns when every line has the first line's members in its order, else None."""
    if count == 0:
        return np.zeros((0, 2 * len(exts)), np.int64)
    first = body[: body.find(b"\n")].split() if b"\n" in body else body.split()
    tokens = body.split()
    width = len(first)
    if width == 0 or width % 4 or len(tokens) != count * width or body.count(b"\n") != count:
        return None
    names = [t.decode() for t in first[0::4]]
    if len(set(names)) != len(names):
        return None
    for j in range(0, width, 4):  # every line's member j has the first line's extension
        if tokens[j::width].count(first[j]) != count:
            return None
    out = np.empty((count, 2 * len(exts)), np.int64)
    for k, ext in enumerate(exts):
        if ext not in names:
            raise ValueError(f"samples have no .{ext} member")
        j = 4 * names.index(ext)
        for col in (1, 2):  # numpy's C parser: a tenth of the time of int() per token
            text = b" ".join(tokens[j + col :: width])
            if not text.replace(b" ", b"").isdigit():
                raise ValueError(f"a .{ext} offset or size is not a number")
            numbers = np.fromstring(text, dtype=np.int64, sep=" ")
            out[:, 2 * k + col - 1] = numbers
    return out


def _columns_of(samples: list[Members], exts: tuple[str, ...]) -> np.ndarray:
    out = np.empty((len(samples), 2 * len(exts)), np.int64)
    for i, members in enumerate(samples):
        by_ext = {ext: (offset, size) for ext, offset, size, _ in members}
        for k, ext in enumerate(exts):
            if ext not in by_ext:
                raise ValueError(f"sample {i} has no .{ext} member")
            out[i, 2 * k : 2 * k + 2] = by_ext[ext]
    return out


def write_index(path: str | Path, samples: list[Members]) -> bytes:
    """Write an index file atomically (a temporary name, then renamed); returns its bytes."""
    path = Path(path)
    data = format_index(samples).encode()
    with replacing(path) as tmp:
        tmp.write_bytes(data)
    return data
