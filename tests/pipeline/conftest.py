"""Fixtures for the pipeline tests: a small synthetic shard directory with known labels.

Labels are global sample numbers (train 0..116, val 117..169), so a batch row names its
sample. Shard sizes are uneven on purpose: ranks and batches straddle shard boundaries.
"""

from __future__ import annotations

import numpy as np
import pytest
from synthetic_shards import make_dataset

TRAIN_SIZES = [40, 40, 37]
VAL_SIZES = [30, 23]


@pytest.fixture(scope="session")
def shard_dir(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("pipeline_shards"), TRAIN_SIZES, VAL_SIZES, seed=3)


def sample_location(sizes: list[int], n: int, first: int = 0) -> tuple[int, int]:
    """(shard number, sample number) of the sample with label n."""
    starts = np.cumsum([0, *sizes])
    s = int(np.searchsorted(starts, n - first, side="right") - 1)
    return s, n - first - int(starts[s])
