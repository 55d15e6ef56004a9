"""Trainer fixtures. `id_shards`: real `preprocess shard` output in which every train image
is its own class, so a label names the sample and a test can follow each sample through
resumes and across DDP ranks (120 train images, 40 val, 120 classes)."""

from __future__ import annotations

import shutil

import pytest


@pytest.fixture(scope="session")
def id_shards(tmp_path_factory, demo_corpus):
    from preprocess.cli import main

    src = tmp_path_factory.mktemp("id_corpus")
    images = sorted((demo_corpus / "train").rglob("*.JPEG"))
    for i, path in enumerate(images):
        (src / "train" / f"c{i:04d}").mkdir(parents=True)
        shutil.copy(path, src / "train" / f"c{i:04d}" / path.name)
    for i, path in enumerate(sorted((demo_corpus / "val").rglob("*.JPEG"))):
        (src / "val" / f"c{i:04d}").mkdir(parents=True)
        shutil.copy(path, src / "val" / f"c{i:04d}" / path.name)
    out = tmp_path_factory.mktemp("id_shards")
    rc = main(["shard", "--src", str(src), "--out", str(out), "--shard-max-count", "32", "--workers", "1",
               "--progress", "off"])
    assert rc == 0
    return out
