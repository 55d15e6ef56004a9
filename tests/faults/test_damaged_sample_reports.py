"""Issue 26, row 10: a shard cut in the middle, or an index file whose offset is shifted,
leaves training going on (right), but each damaged sample was reported with an empty or
raw-bytes key and a wrong cause ("label b'' is not a class number"). Now the report names
the shard, the byte offset of the sample and the real cause: a truncated shard, or an
index out of step with the tar.

Both loaders (DALI in CPU mode, the reference one) and the analysis tools' in-order reader
read a copy of the session's `demo_shards` (4 train shards: 32, 32, 32 and 24 samples)."""

from __future__ import annotations

import logging
import os
import re
import shutil

import pytest

from pipeline import make_loader
from pipeline.inorder import SplitSamples
from preprocess.indexfile import read_index


@pytest.fixture
def shards(demo_shards, tmp_path):
    out = tmp_path / "shards"
    shutil.copytree(demo_shards, out, ignore=shutil.ignore_patterns(".preprocess"))
    return out


def _cut(shards) -> int:
    """Cut train-000001.tar in the middle of a sample; the number of samples it loses."""
    path = shards / "train-000001.tar"
    samples = read_index(shards / "train-000001.idx")
    _, offset, size, _ = samples[20][0]  # the 21st sample's JPEG member
    os.truncate(path, offset + size // 2)
    return len(samples) - 20


def _shift(shards) -> None:
    """Move the 4th sample's JPEG offset in train-000001.idx by 700 bytes, as a foreign tool's
    off-by-some index would."""
    path = shards / "train-000001.idx"
    lines = path.read_text().splitlines()
    parts = lines[4].split()
    parts[1] = str(int(parts[1]) + 700)
    lines[4] = " ".join(parts)
    path.write_text("\n".join(lines) + "\n")


def _reports(text: str) -> list[str]:
    return [line for line in text.splitlines() if "damaged sample" in line]


def _check(reports: list[str], cause: str) -> None:
    assert reports
    for line in reports:
        assert re.search(r"damaged sample train-000001\.tar(:[A-Za-z0-9_]+|@\d+) \(at byte \d+: ", line), line
        assert cause in line and "b''" not in line and "not a class number" not in line, line


@pytest.mark.parametrize("backend", ["dali", "reference"])
def test_a_cut_shard_is_reported_as_truncated_with_shard_and_offset(shards, backend, caplog):
    lost = _cut(shards)
    caplog.set_level(logging.WARNING)
    loader = make_loader(shards, batch_size=16, backend=backend, num_workers=1)
    seen = sum(int((y >= 0).sum()) for _, y in loader)  # damaged rows are masked (label DAMAGED)
    assert seen == loader.num_samples - lost  # training goes on without them
    reports = _reports(caplog.text)
    _check(reports, "the shard is truncated")
    assert len({line.split(" (")[0] for line in reports}) == lost


@pytest.mark.parametrize("backend", ["dali", "reference"])
def test_an_index_out_of_step_with_the_tar_is_reported_as_such(shards, backend, caplog):
    _shift(shards)
    caplog.set_level(logging.WARNING)
    # In evaluation order every sample is read once (a train epoch may leave this one out).
    loader = make_loader(shards, mode="center", batch_size=16, backend=backend, num_workers=1)
    seen = sum(int(valid.sum()) for _, _, valid in loader)
    assert seen == loader.num_samples - 1  # masked, the rest read
    reports = _reports(caplog.text)
    _check(reports, "the index file is out of step with the tar")


def test_the_in_order_reader_reports_the_same(shards, caplog):
    lost = _cut(shards)
    caplog.set_level(logging.WARNING)
    samples = SplitSamples(shards, "train")
    assert sum(1 for _ in samples) == len(samples) - lost
    _check(_reports(caplog.text), "the shard is truncated")
