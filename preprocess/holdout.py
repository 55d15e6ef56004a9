"""`preprocess shard --holdout-fraction F --holdout-seed S`: a validation split for a source
that has only train/ (ImageNet Fall 2009 has none; section 6 used "half of the images for
training and half for testing").

Each class is split on its own, so every class is on both sides: of a class's n files,
round(F * n) go to val, at least 1 and at most n - 1 where n >= 2 (a class of one file
stays in train). Which files go depends only on the seed and each file's path (a keyed
hash ranks them), not on the worker count, the part or the listing order, so every part
of a split job and every rerun holds out the same files. The held-out files are ordinary
val samples from then on: the mean image and PCA, computed over train, never see them.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from preprocess.sources import Source, SourceError, SampleTable, to_bytes


def check(src) -> None:
    if (Path(src) / "val").exists():
        raise SourceError(f"{src} has a val/ folder: --holdout-fraction is for a source with train/ only")


def held_count(n: int, fraction: float) -> int:
    if n < 2:
        return 0
    return min(max(int(round(fraction * n)), 1), n - 1)


def _rank(seed: int, rel: str) -> int:
    return int.from_bytes(hashlib.blake2b(to_bytes(f"{seed}\0{rel}"), digest_size=8).digest(), "little")


def split(source: Source, fraction: float, seed: int) -> Source:
    """`source` with part of each class moved from train to val (see the module's docstring)."""
    train = source.samples["train"]
    labels = train.labels
    ranks = np.fromiter((_rank(seed, train.row(i)[0]) for i in range(len(train))), np.uint64, len(train))
    order = np.lexsort((ranks, labels))  # by class, then by rank within the class
    counts = np.bincount(labels, minlength=len(source.classes))
    starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
    held = np.zeros(len(train), bool)
    for c in np.flatnonzero(counts):
        k = held_count(int(counts[c]), fraction)
        held[order[starts[c]:starts[c] + k]] = True
    samples = dict(source.samples)
    samples["train"] = train.take(np.flatnonzero(~held))
    samples["val"] = SampleTable.build("val", train.wnids, (train.row(int(i)) for i in np.flatnonzero(held)))
    return Source(source.root, source.classes, samples, source.rejects)
