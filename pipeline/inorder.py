"""A split's samples once each, in file order: the reader of the paper's analysis tools.

`trainer neighbors` builds its feature index of the train split with it, `trainer
experiment` its in-memory training set. The training loaders (`pipeline.make_loader`)
augment, shuffle and split over ranks; these tools want every sample once, with where it
lies. Both read through the same `pipeline.reference.ShardReader` and the split's index
files, so the tar format, the label rule and the report of a damaged sample are the
loaders' own: a label that is not a class number, or a JPEG that does not decode, is
reported by "shard:key" (`pipeline.base.warn_damaged`) and left out.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.base import label_bound, warn_damaged
from pipeline.reference import ShardReader
from pipeline.splitindex import SplitIndex
from preprocess.contract import Manifest
from preprocess.offsetstable import IMAGE_OFFSET, IMAGE_SIZE_BYTES


@dataclass(frozen=True)
class StoredSample:
    shard: int  # the shard's number in the split's file order
    key: str
    offset: int  # where the sample's JPEG starts in its shard, in bytes
    size: int  # the JPEG's length in bytes
    label: int
    image: Any  # what `decode` made of the JPEG


class SplitSamples:
    """The samples of one split of a shard folder; iterate it, or `read` some of its shards."""

    def __init__(self, data_dir: str | Path, split: str, manifest: Manifest | None = None):
        self.index = SplitIndex.read(data_dir, split, manifest)  # no index files: the DataError naming the fix
        self.num_classes = label_bound(Path(data_dir), manifest)

    def __len__(self) -> int:
        return self.index.total

    def __iter__(self) -> Iterator[StoredSample]:
        return self.read()

    def read(self, shards: Iterable[int] | None = None, decode: Callable[[bytes], Any] | None = None,
             ) -> Iterator[StoredSample]:
        """The samples of `shards` (default: all), in order; `decode` turns a stored JPEG
        into the sample's image (default: `pipeline.reference.decode_rgb`)."""
        reader = ShardReader(self.index, self.num_classes)
        starts, table = self.index.starts, self.index.table
        try:
            for s in range(len(self.index.tars)) if shards is None else shards:
                for g in range(int(starts[s]), int(starts[s + 1])):
                    image, label, damage = reader.read(g, decode)
                    if damage:
                        warn_damaged(*damage)
                        continue
                    yield StoredSample(s, reader.key(g), int(table[g, IMAGE_OFFSET]),
                                       int(table[g, IMAGE_SIZE_BYTES]), label, image)
        finally:
            reader.close()
