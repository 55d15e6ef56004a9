"""Fixtures for the pipeline tests: a small synthetic shard directory with known labels.

Labels are global sample numbers (train 0..116, val 117..169), so a batch row names its
sample. Shard sizes are uneven on purpose: ranks and batches straddle shard boundaries.
"""

from __future__ import annotations

import pytest
from synthetic_shards import TRAIN_SIZES, VAL_SIZES, make_dataset


@pytest.fixture(scope="session")
def shard_dir(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("pipeline_shards"), TRAIN_SIZES, VAL_SIZES, seed=3)
