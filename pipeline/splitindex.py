"""A split's shards and where each sample's bytes lie: held once per node, or once per rank.

Used by both backends of `pipeline.make_loader` (`trainer train` / `trainer evaluate`).
`SplitIndex.read` reads only each index file's header (the sample counts), which is all
that planning and the DALI backend need. The reference loader also needs every sample's
JPEG and label offsets, the (N, 4) int64 `table` (32 bytes a sample, 41 MB for ImageNet's
1.28 M). Shards that `preprocess shard` wrote come with it as a file
(`preprocess.offsetstable`): the rank checks it against the manifest and maps it
read-only, and so does each DataLoader worker, by its path, so every rank and worker of a
node reads one copy in the page cache, as FFCV's workers share its table. For shards
without one (other tools, older outputs), or whose table no longer matches their index
files (a warning says so and how to rewrite it), the rank parses the index files once into
shared memory, which a worker receives as a file descriptor (torch.multiprocessing's
reductions): one copy per rank. Before either, each worker unpickled its own copy of every
index line at every epoch start (217 MB a worker at ImageNet size).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from preprocess.contract import (
    MANIFEST_NAME, REWRITE_FIX, CorruptError, DataError, Manifest, index_name, require_shards,
)
from preprocess.indexfile import read_index_count
from preprocess.offsetstable import WIDTH, fill, map_table, open_table

log = logging.getLogger(__name__)


@dataclass
class SplitIndex:
    """The split's shards in file order, their sample counts and (on demand) the offsets table."""

    tars: list[Path]
    idx: list[Path]
    sizes: np.ndarray  # (S,) int64 samples per shard
    _table: torch.Tensor | np.ndarray | None = field(default=None, repr=False)
    data_dir: Path | None = None
    table_entry: dict | None = None  # the manifest's entry for the split's table file, if it has one
    starts: np.ndarray = field(init=False, repr=False)  # (S + 1,) first global number of each shard, then N
    _checked: bool = field(default=False, init=False, repr=False)  # the rank checked the file's sha256

    def __post_init__(self):
        self.starts = np.concatenate([[0], np.cumsum(self.sizes)]).astype(np.int64)

    @classmethod
    def read(cls, data_dir: str | Path, split: str, manifest: Manifest | None = None) -> SplitIndex:
        """The split's shards and counts; a missing index is a DataError naming the fix.
        `manifest`: the folder's dataset.json where the command read it already (once a command)."""
        data_dir = Path(data_dir)
        tars = require_shards(data_dir, split)
        idx = [tar.with_name(index_name(tar)) for tar in tars]
        for tar, path in zip(tars, idx):
            if not path.is_file():
                raise DataError(
                    f"{tar} has no DALI index {path.name}: re-run `preprocess shard --src IMAGENET_DIR "
                    f"--out {data_dir}` (it writes both), or `wds2idx {tar} {path}`"
                )
        sizes = np.array([read_index_count(p) for p in idx], np.int64)
        if not (data_dir / MANIFEST_NAME).is_file():  # shards of another tool: their index files are all there is
            return cls(tars, idx, sizes, data_dir=data_dir)
        manifest = manifest or Manifest.read(data_dir)
        _check_counts(data_dir, split, manifest, tars, sizes)
        return cls(tars, idx, sizes, data_dir=data_dir, table_entry=manifest.split_offsets(split))

    @property
    def total(self) -> int:
        return int(self.starts[-1])

    def global_id(self, shard: np.ndarray | int, sample: np.ndarray | int):
        """Global sample number (position in file order) of sample `sample` of shard `shard`."""
        return self.starts[shard] + sample

    @property
    def node_shared(self) -> bool:
        """Whether the table is the split's file, mapped (one copy per node)."""
        return self.table_entry is not None

    @property
    def table(self) -> np.ndarray:
        """(N, 4) int64, by global sample number, columns as `preprocess.offsetstable` names
        them. Mapped (or parsed) on first use."""
        if self._table is None:
            if self.table_entry is None:
                shared = torch.empty((self.total, WIDTH), dtype=torch.int64).share_memory_()
                fill(shared.numpy(), self.idx, self.sizes)
                self._table = shared
            elif self._checked:
                self._table = map_table(self.data_dir / self.table_entry["name"], self.total)
            else:
                try:
                    self._table = open_table(self.data_dir, self.table_entry, self.idx, self.total)
                    self._checked = True
                except CorruptError as err:  # a stale cache of the index files: read them instead
                    log.warning("%s; until then each rank parses the index files itself", err)
                    self.table_entry = None
                    return self.table
        return self._table.numpy() if isinstance(self._table, torch.Tensor) else self._table

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        if self.node_shared:  # a worker maps the file itself: pickling a memmap copies its rows
            state["_table"] = None
        return state


def _check_counts(data_dir: Path, split: str, manifest: Manifest, tars: list[Path], sizes: np.ndarray) -> None:
    """A manifest that disagrees with the index files (a shard more or less, another count)
    describes other shards: training on them would go on with wrong epoch lengths and a
    table of other rows, so the reader stops as `preprocess verify` does (CorruptError)."""
    entries = manifest.split_shards(split)
    listed = {e.get("name"): e.get("count") for e in entries}
    found = {tar.name: int(n) for tar, n in zip(tars, sizes)}
    problem = None
    if set(listed) != set(found):
        missing, extra = sorted(set(listed) - set(found)), sorted(set(found) - set(listed))
        problem = "; ".join(([f"lists {', '.join(missing)}, not on disk"] if missing else [])
                            + ([f"does not list {', '.join(extra)}"] if extra else []))
    elif (bad := [n for n in found if listed[n] != found[n]]):
        problem = f"says {bad[0]} holds {listed[bad[0]]} samples, its index file {found[bad[0]]}"
    elif manifest.split_count(split) != int(sizes.sum()):
        problem = f"says {split} holds {manifest.split_count(split)} samples, its index files {int(sizes.sum())}"
    if problem:
        raise CorruptError(f"{data_dir / MANIFEST_NAME} does not match the {split} shards (it {problem}): "
                           f"run `preprocess verify {data_dir}`, then "
                           f"{REWRITE_FIX.format(dir=data_dir)}")
