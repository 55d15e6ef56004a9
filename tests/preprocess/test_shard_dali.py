"""The shards of `preprocess shard` read back through DALI's webdataset reader (CPU)."""

from __future__ import annotations

import numpy as np
import pytest

from preprocess.contract import EXT_IMAGE, EXT_LABEL, Manifest, index_name, list_shards, load_manifest
from preprocess.indexfile import parse_index

dali = pytest.importorskip("nvidia.dali")


def _read_all(shard, index):
    from nvidia.dali import fn, pipeline_def, types

    @pipeline_def(batch_size=16, num_threads=1, device_id=None)
    def pipe():
        jpg, cls = fn.readers.webdataset(
            paths=[str(shard)], index_paths=[str(index)], ext=[EXT_IMAGE, EXT_LABEL],
            missing_component_behavior="error", random_shuffle=False, name="reader",
        )
        images = fn.decoders.image(jpg, device="cpu", output_type=types.RGB)
        return images, cls

    p = pipe()
    p.build()
    n = p.reader_meta("reader")["epoch_size"]
    shapes, labels = [], []
    while len(labels) < n:
        images, cls = p.run()
        for i in range(len(images)):
            if len(labels) == n:
                break
            shapes.append(np.array(images.at(i)).shape)
            labels.append(int(bytes(np.array(cls.at(i))).decode()))
    return n, shapes, labels


def test_dali_reads_every_shard_with_its_index(demo_shards):
    manifest = load_manifest(demo_shards)
    n_classes = len(manifest["classes"])
    for split in ("train", "val"):
        shards = list_shards(demo_shards, split)
        assert [s.name for s in shards] == [e["name"] for e in manifest["splits"][split]["shards"]]
        total = 0
        for shard, entry in zip(shards, manifest["splits"][split]["shards"]):
            index = shard.with_name(index_name(shard))
            assert len(parse_index(index.read_text())) == entry["count"]
            n, shapes, labels = _read_all(shard, index)
            assert n == entry["count"]
            assert set(shapes) == {(256, 256, 3)}
            assert all(0 <= c < n_classes for c in labels)
            total += n
        assert total == Manifest.of(manifest).split_count(split) > 0
