"""Shared fixtures: a small demo corpus in ImageNet's layout and its shards.

`demo_corpus`: 10 classes, 12 train + 4 val images per class, class folders, with
LOC_synset_mapping.txt (built by `preprocess.democorpus`, a few seconds).
`demo_shards`: `preprocess shard` output of it with --shard-max-count 32 (4 train shards,
2 val shards), DALI index files, dataset.json, rejects.jsonl and stats.npz.
Both are session-scoped and read-only for tests: copy them before changing anything.
"""

from __future__ import annotations

import pytest

from preprocess import democorpus

DEMO_CLASSES = 10
DEMO_TRAIN_PER_CLASS = 12
DEMO_VAL_PER_CLASS = 4
DEMO_SHARD_MAX_COUNT = 32


@pytest.fixture(scope="session")
def demo_corpus(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo_corpus")
    spec = democorpus.CorpusSpec(DEMO_CLASSES, DEMO_TRAIN_PER_CLASS, DEMO_VAL_PER_CLASS, seed=0)
    return democorpus.build(out, spec)


@pytest.fixture(scope="session")
def demo_shards(tmp_path_factory, demo_corpus):
    from preprocess.cli import main

    out = tmp_path_factory.mktemp("demo_shards")
    rc = main([
        "shard", "--src", str(demo_corpus), "--out", str(out),
        "--synsets", str(demo_corpus / democorpus.SYNSETS_NAME),
        "--shard-max-count", str(DEMO_SHARD_MAX_COUNT), "--workers", "1", "--progress", "off",
    ])
    assert rc == 0, "preprocess shard failed on the demo corpus"
    return out
