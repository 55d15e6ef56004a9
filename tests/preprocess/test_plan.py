"""`preprocess shard`'s plan from the compact source table: the same units as shuffling the
samples themselves, and a worker is handed its unit's rows alone."""

from __future__ import annotations

import pickle
import random

from preprocess.shards import Options, plan
from preprocess.sources import discover


def test_plan_equals_the_shuffled_samples_and_a_unit_travels_alone(demo_corpus):
    source = discover(demo_corpus)
    units = plan(source, Options(seed=5, shard_max_count=7))
    for split in ("train", "val"):
        want = list(source.samples[split])  # Sample objects, path order
        if split == "train":
            random.Random(5).shuffle(want)  # what the plan did to the list of samples
        assert [s for u in units if u.split == split for s in u.samples] == want
    unit = units[3]
    sent = pickle.loads(pickle.dumps(unit))  # what a worker process receives
    assert sent.name == unit.name and list(sent.samples) == list(unit.samples)
    assert len(sent.table) == unit.count < len(source.samples["train"])
