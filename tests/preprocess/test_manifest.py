"""Readers take dataset.json through one typed accessor, `preprocess.contract.Manifest`."""

from __future__ import annotations

import json

from preprocess.contract import MANIFEST_NAME, Manifest, load_manifest
from preprocess.verify import verify


def test_the_accessor_gives_what_the_file_holds(demo_shards):
    raw, m = load_manifest(demo_shards), Manifest.read(demo_shards)
    assert m.num_classes == len(raw["classes"]) == 10 and m.class_digest == raw["class_digest"]
    assert m.image_size == raw["params"]["image_size"]
    for split in ("train", "val"):
        assert m.split_count(split) == raw["splits"][split]["count"] > 0
        assert list(m.split_shards(split)) == raw["splits"][split]["shards"]
    assert m.split_count("test") == 0 and m.split_shards("test") == ()


def test_classes_listed_out_of_label_order_are_read_in_label_order(demo_shards, tmp_path):
    """The same shards, their class list written in reverse: still the same labels (the
    digest sorts by index). verify used to index that list by position and flagged every sample."""
    for f in demo_shards.iterdir():
        (tmp_path / f.name).symlink_to(f)
    raw = load_manifest(demo_shards)
    raw["classes"] = raw["classes"][::-1]
    (tmp_path / MANIFEST_NAME).unlink()
    (tmp_path / MANIFEST_NAME).write_text(json.dumps(raw))
    m = Manifest.read(tmp_path)
    assert [c["index"] for c in m.classes] == list(range(10)) and m.class_names()[0] == "astronaut"
    assert verify(tmp_path) == []
