"""The split's offsets table, `{split}.offsets.npy`: where every sample's bytes lie, once per node.

Part of the data contract, beside the index files it is derived from (`preprocess.indexfile`
parses them). One (N, 4) int64 array, in shard file order: the JPEG's data offset and size,
then the label's, 32 bytes a sample (41 MB for ImageNet's 1.28 M, 480 MB for the 15 M of
Fall 2011). `preprocess shard` (and `stats --merge`) writes it with the manifest, which
records its size and sha256 and the sha256 of the index files it was made from. The
reference loader maps the file read-only: every rank and every DataLoader worker of a node
then shares the same page-cache pages, where a table parsed per rank costs a node 8 copies
(328 MB at ImageNet size). A table that no longer matches (a shard rewritten by other
means, a damaged file) is refused, and `pipeline.splitindex` parses the index files per
rank instead, as it does for shards made without a table (other tools, older outputs).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from common.tempfiles import replacing
from preprocess.contract import EXT_IMAGE, EXT_LABEL, REWRITE_FIX, CorruptError, DataError, sha256_file
from preprocess.indexfile import read_index_columns

COLUMNS = (EXT_IMAGE, EXT_LABEL)
IMAGE_OFFSET, IMAGE_SIZE_BYTES, LABEL_OFFSET, LABEL_SIZE_BYTES = range(4)
WIDTH = 2 * len(COLUMNS)


def table_name(split: str) -> str:
    return f"{split}.offsets.npy"


def _columns(idx_paths: list[Path], sizes) -> Iterator[np.ndarray]:
    """Each index file's (n, 4) columns in turn, its count checked against `sizes`."""
    for path, size in zip(idx_paths, sizes):
        columns = read_index_columns(path, COLUMNS)
        if len(columns) != size:
            raise DataError(f"{path} changed while it was read: {len(columns)} samples, expected {size}")
        yield columns


def fill(into: np.ndarray, idx_paths: list[Path], sizes: list[int] | np.ndarray) -> None:
    """Parse the index files into their rows of `into`, one shard at a time (no per-sample
    objects, the whole table never held twice)."""
    start = 0
    for columns in _columns(idx_paths, sizes):
        into[start : start + len(columns)] = columns
        start += len(columns)


def write_table(data_dir: str | Path, split: str, idx_paths: list[Path], sizes: list[int]) -> dict:
    """Write the split's table atomically, streamed shard by shard into the file; returns its
    manifest entry {"name", "rows", "bytes", "sha256", "index_sha256"}."""
    path = Path(data_dir) / table_name(split)
    rows = int(sum(sizes))
    header = {"descr": np.lib.format.dtype_to_descr(np.dtype("<i8")), "fortran_order": False, "shape": (rows, WIDTH)}
    with replacing(path) as tmp, open(tmp, "wb") as f:
        np.lib.format.write_array_header_1_0(f, header)
        for columns in _columns(idx_paths, sizes):  # appended: the writer holds one shard's rows
            f.write(columns.astype("<i8", copy=False).tobytes())
    return {"name": path.name, "rows": rows, "bytes": path.stat().st_size, "sha256": sha256_file(path),
            "index_sha256": sha256_file(*idx_paths)}


def _damaged(path: Path, why: str) -> CorruptError:
    return CorruptError(f"{path} {why}: {REWRITE_FIX.format(dir=path.parent)}")


def map_table(path: str | Path, rows: int) -> np.ndarray:
    """The table mapped read-only, its shape checked (a worker's open: its rank checked the rest)."""
    path = Path(path)
    try:
        table = np.load(path, mmap_mode="r")
    except (OSError, ValueError) as err:
        raise _damaged(path, f"cannot be read as a table ({err})") from None
    if table.dtype != np.int64 or table.shape != (rows, WIDTH):
        raise _damaged(path, f"is {table.dtype} {table.shape}, the index files say int64 ({rows}, {WIDTH})")
    return table


def open_table(data_dir: str | Path, entry: dict, idx_paths: list[Path], rows: int) -> np.ndarray:
    """The table a manifest entry names, mapped read-only once it is checked whole: its own
    size and sha256, and the sha256 of the index files it must describe (a shard rewritten
    since would otherwise send readers to the wrong bytes). About 0.3 s at ImageNet size,
    against 0.8 s to parse the index files."""
    path = Path(data_dir) / entry["name"]
    if not path.is_file():
        raise _damaged(path, "is missing")
    if path.stat().st_size != entry.get("bytes") or sha256_file(path) != entry.get("sha256"):
        raise _damaged(path, "differs from the manifest (size or sha256)")
    if sha256_file(*idx_paths) != entry.get("index_sha256"):
        raise _damaged(path, "was made from other index files than the shards have now")
    return map_table(path, rows)
