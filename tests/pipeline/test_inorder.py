"""The analysis tools' reader (`pipeline.inorder`): a split's samples once each, in file
order, where they lie, with the loaders' label rule and damage report; and the tools on it
(`trainer experiment`'s training set, `trainer neighbors`' index pass)."""

from __future__ import annotations

import io
import logging
import shutil
import tarfile

import numpy as np
import torch
from PIL import Image
from synthetic_shards import relabel

from pipeline.inorder import SplitSamples


def test_samples_come_in_file_order_with_their_place_in_the_shard(shard_dir):
    expected = []
    for s, path in enumerate(sorted(shard_dir.glob("train-*.tar"))):
        with tarfile.open(path) as tar:
            for m in tar:
                if m.name.endswith(".jpg"):
                    data = tar.extractfile(m).read()
                    expected.append((s, m.name[: -len(".jpg")], m.offset_data, m.size, data))
    samples = list(SplitSamples(shard_dir, "train"))
    assert [(x.shard, x.key, x.offset, x.size) for x in samples] == [e[:4] for e in expected]
    assert [x.label for x in samples] == list(range(len(expected)))  # the synthetic labels: sample numbers
    for x, e in zip(samples[:3], expected):
        assert np.array_equal(x.image, np.asarray(Image.open(io.BytesIO(e[4])).convert("RGB")))
    assert [x.key for x in SplitSamples(shard_dir, "train").read(shards=[1])] == \
        [e[1] for e in expected if e[0] == 1]


def test_a_bad_label_is_a_reported_damaged_sample_for_the_analysis_tools(demo_shards, tmp_path, caplog):
    """Before, `trainer experiment` kept a label of 99 among 10 classes (its loss then indexes
    past the last class) and stopped on a label that is not a number; `trainer neighbors`
    did the same while indexing. Now both leave such samples out and name them, as the
    training loaders do."""
    from tests.evaluate.helpers import train_config
    from trainer.analysis.experiment import shrunk_split
    from trainer.analysis.neighbors import ShardImages

    shards = tmp_path / "shards"
    shutil.copytree(demo_shards, shards, ignore=shutil.ignore_patterns(".preprocess"))
    total = len(SplitSamples(shards, "train"))
    outside = relabel(shards / "train-000001.tar", 2, b"99")
    not_a_number = relabel(shards / "train-000003.tar", 0, b"x1")
    caplog.set_level(logging.WARNING)

    _, labels = shrunk_split(shards, "train", 8, None)
    assert len(labels) == total - 2 and int(labels.max()) < 10
    assert f"train-000001.tar:{outside}" in caplog.text and f"train-000003.tar:{not_a_number}" in caplog.text
    assert caplog.text.count("not a class number") == 2

    # The neighbors index pass, split over two DataLoader workers by shard: each good sample once.
    images = ShardImages(shards, "train", train_config(shards, tmp_path / "run"))
    rows = list(torch.utils.data.DataLoader(images, batch_size=None, num_workers=2))
    keys = [key for _, key, *_ in rows]
    assert len(keys) == len(set(keys)) == total - 2 and not {outside, not_a_number} & set(keys)
