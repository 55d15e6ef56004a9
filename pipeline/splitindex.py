"""A split's shards and where each sample's bytes lie: held once per rank, shared by its workers.

Used by both backends of `pipeline.make_loader` (`trainer train` / `trainer evaluate`).
`SplitIndex.read` reads only each index file's header (the sample counts), which is all
that planning and the DALI backend need. The reference loader also needs every sample's
JPEG and label offsets: `table` parses them once (`preprocess.contract.read_index_columns`)
into one fixed-width int64 array of 32 bytes a sample (41 MB for ImageNet's 1.28 M) in
shared memory. Pickled to a DataLoader worker, a shared torch tensor travels as a file
descriptor, not as data (torch.multiprocessing's reductions): every worker maps the
rank's one copy, as FFCV's workers share its table, instead of unpickling its own copy of
every index line at every epoch start (217 MB a worker at ImageNet size before).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from preprocess.contract import EXT_IMAGE, EXT_LABEL, DataError, index_name, require_shards
from preprocess.indexfile import read_index_columns, read_index_count

# Columns of `SplitIndex.table`: offset and size of the JPEG, then of the label.
IMAGE_OFFSET, IMAGE_SIZE_BYTES, LABEL_OFFSET, LABEL_SIZE_BYTES = range(4)
COLUMNS = (EXT_IMAGE, EXT_LABEL)


@dataclass
class SplitIndex:
    """The split's shards in file order, their sample counts and (on demand) the offsets table."""

    tars: list[Path]
    idx: list[Path]
    sizes: np.ndarray  # (S,) int64 samples per shard
    _table: torch.Tensor | None = field(default=None, repr=False)
    starts: np.ndarray = field(init=False, repr=False)  # (S + 1,) first global number of each shard, then N

    def __post_init__(self):
        self.starts = np.concatenate([[0], np.cumsum(self.sizes)]).astype(np.int64)

    @classmethod
    def read(cls, data_dir: str | Path, split: str) -> SplitIndex:
        """The split's shards and counts; a missing index is a DataError naming the fix."""
        tars = require_shards(data_dir, split)
        idx = [tar.with_name(index_name(tar)) for tar in tars]
        for tar, path in zip(tars, idx):
            if not path.is_file():
                raise DataError(
                    f"{tar} has no DALI index {path.name}: re-run `preprocess shard --src IMAGENET_DIR "
                    f"--out {data_dir}` (it writes both), or `wds2idx {tar} {path}`"
                )
        sizes = np.array([read_index_count(p) for p in idx], np.int64)
        return cls(tars, idx, sizes)

    @property
    def total(self) -> int:
        return int(self.starts[-1])

    def global_id(self, shard: np.ndarray | int, sample: np.ndarray | int):
        """Global sample number (position in file order) of sample `sample` of shard `shard`."""
        return self.starts[shard] + sample

    @property
    def table(self) -> np.ndarray:
        """(N, 4) int64, by global sample number: IMAGE_OFFSET, IMAGE_SIZE_BYTES, LABEL_OFFSET,
        LABEL_SIZE_BYTES. Parsed on first use, straight into shared memory."""
        if self._table is None:
            starts = self.starts
            shared = torch.empty((self.total, 2 * len(COLUMNS)), dtype=torch.int64).share_memory_()
            view = shared.numpy()
            for s, path in enumerate(self.idx):
                columns = read_index_columns(path, COLUMNS)
                if len(columns) != self.sizes[s]:
                    raise DataError(f"{path} changed while it was read: {len(columns)} samples, "
                                    f"its header said {self.sizes[s]}")
                view[starts[s] : starts[s + 1]] = columns
            self._table = shared
        return self._table.numpy()
