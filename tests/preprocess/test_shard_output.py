"""`preprocess shard` output: manifest, order, statistics, determinism across workers, byte limits."""

from __future__ import annotations

import json
import tarfile

import numpy as np
import pytest
from shardrun import output_bytes, run_cli, run_inprocess, shard_args

from preprocess import image
from preprocess.contract import Manifest, list_shards, load_manifest, load_stats
from preprocess.indexfile import parse_index
from preprocess.sources import discover
from preprocess.verify import verify


def _samples(shard):
    with tarfile.open(shard) as tf:
        members = {m.name: tf.extractfile(m).read() for m in tf if m.isfile()}
    keys = list(dict.fromkeys(name.split(".")[0] for name in members))
    return [(k, int(members[f"{k}.cls"]), json.loads(members[f"{k}.json"])) for k in keys]


def test_manifest_follows_the_contract(demo_shards, demo_corpus):
    m = load_manifest(demo_shards)
    assert [c["wnid"] for c in m["classes"]] == sorted(p.name for p in (demo_corpus / "train").iterdir())
    assert [c["index"] for c in m["classes"]] == list(range(10)) and m["classes"][0]["name"] == "astronaut"
    counts = Manifest.of(m)
    assert counts.split_count("train") == 120 and counts.split_count("val") == 40 and m["rejected"] == 0
    assert m["params"]["image_size"] == 256 and m["params"]["jpeg_quality"] == 95 and m["params"]["seed"] == 0
    assert m["totals"]["count"] == 160
    for split in ("train", "val"):
        entries = m["splits"][split]["shards"]
        assert [e["count"] for e in entries] == ([32, 32, 32, 24] if split == "train" else [32, 8])
        assert [p.name for p in list_shards(demo_shards, split)] == [e["name"] for e in entries]
    assert (demo_shards / "rejects.jsonl").read_text() == ""


def test_train_is_shuffled_val_is_sorted_labels_match(demo_shards):
    m = load_manifest(demo_shards)
    wnid_of = [c["wnid"] for c in m["classes"]]
    for shard in list_shards(demo_shards, "train"):
        samples = _samples(shard)
        assert len({label for _, label, _ in samples}) >= 5  # every shard is a class mix
        assert all(meta["wnid"] == wnid_of[label] for _, label, meta in samples)
    val = [meta["src"] for shard in list_shards(demo_shards, "val") for _, _, meta in _samples(shard)]
    assert val == sorted(val)


def _numpy_stats(corpus):
    """Reference over every train image's stored pixels (before JPEG encoding)."""
    pixels = np.stack([image.prepare((corpus / s.rel).read_bytes()) for s in discover(corpus).samples["train"]])
    flat = pixels.reshape(-1, 3).astype(np.float64)
    return flat.mean(axis=0), np.cov(flat.T, bias=True), pixels.astype(np.float64).mean(axis=0)


def _rel(a, b):
    return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


@pytest.mark.parametrize("workers", [1, 2, 3])
def test_stats_match_numpy_and_bytes_do_not_depend_on_workers(demo_corpus, demo_shards, tmp_path, workers):
    out = tmp_path / "out"
    result = run_cli(shard_args(demo_corpus, out, "--workers", str(workers)))
    assert result.returncode == 0, result.stderr
    assert output_bytes(out) == output_bytes(demo_shards)
    mean, cov, mean_image = _numpy_stats(demo_corpus)
    stats = load_stats(out)
    assert stats.n_pixels == 120 * 256 * 256
    assert _rel(stats.mean_rgb, mean) <= 1e-9
    assert _rel(stats.cov, cov) <= 1e-9
    assert _rel(stats.mean_image.astype(np.float64), mean_image) <= 1e-6  # stored as float32
    vals, vecs = np.linalg.eigh(cov)
    assert _rel(stats.eigvals, vals[::-1]) <= 1e-9
    assert np.allclose(stats.cov @ stats.eigvecs, stats.eigvecs * stats.eigvals, atol=1e-6)


def test_shard_max_bytes_splits_shards_deterministically(demo_corpus, tmp_path):
    limit = 300_000
    for name in ("a", "b"):
        assert run_inprocess(shard_args(demo_corpus, tmp_path / name, "--workers", "1",
                                        "--shard-max-bytes", str(limit))) == 0
    assert output_bytes(tmp_path / "a") == output_bytes(tmp_path / "b")
    m = load_manifest(tmp_path / "a")
    for split in ("train", "val"):
        entries = m["splits"][split]["shards"]
        assert len(entries) > 4 and all(e["bytes"] <= limit for e in entries)
        assert sum(e["count"] for e in entries) == Manifest.of(m).split_count(split)
        for entry in entries:
            idx = (tmp_path / "a" / entry["name"]).with_suffix(".idx")
            assert len(parse_index(idx.read_text())) == entry["count"]
    assert verify(tmp_path / "a") == []


def test_verify_accepts_good_output_and_lists_what_is_wrong(demo_shards, tmp_path):
    import shutil

    assert verify(demo_shards) == []
    bad = tmp_path / "bad"
    shutil.copytree(demo_shards, bad)
    data = bytearray((bad / "train-000001.tar").read_bytes())
    data[2000] ^= 0xFF
    (bad / "train-000001.tar").write_bytes(bytes(data))
    (bad / "val-000001.idx").unlink()
    m = json.loads((bad / "dataset.json").read_text())
    m["splits"]["train"]["shards"][2]["count"] += 1
    (bad / "dataset.json").write_text(json.dumps(m))
    (bad / "val-000007.tar").write_bytes(b"")
    problems = "\n".join(verify(bad))
    assert "train-000001.tar: size or sha256" in problems
    assert "val-000001.idx" in problems
    assert "train-000002.tar: 32 samples, manifest says 33" in problems
    assert "val-000007.tar: not in the manifest" in problems
    result = run_cli(["verify", str(bad)])
    assert result.returncode == 1 and "problem" in result.stderr
