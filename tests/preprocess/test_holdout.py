"""`preprocess shard --holdout-fraction`: a val split for a source with train/ only."""

from __future__ import annotations

import shutil

import pytest
from shardrun import output_bytes, run_cli, run_inprocess, shard_args

from preprocess.contract import Manifest, list_shards, load_manifest, load_stats
from preprocess.democorpus import SYNSETS_NAME
from preprocess.holdout import held_count
from test_shard_output import _samples


@pytest.fixture(scope="module")
def train_only(demo_corpus, tmp_path_factory):
    src = tmp_path_factory.mktemp("train_only")
    shutil.copytree(demo_corpus / "train", src / "train", copy_function=lambda a, b: shutil.os.link(a, b))
    shutil.copy(demo_corpus / SYNSETS_NAME, src / SYNSETS_NAME)
    return src


def test_held_count_keeps_every_class_on_both_sides():
    assert [held_count(n, 0.5) for n in (1, 2, 3, 12)] == [0, 1, 2, 6]
    assert held_count(10, 0.01) == 1 and held_count(10, 0.99) == 9


def test_holdout_is_per_class_deterministic_and_kept_out_of_the_statistics(train_only, tmp_path):
    holdout = ("--holdout-fraction", "0.25", "--holdout-seed", "7")
    one, two = tmp_path / "one", tmp_path / "two"
    assert run_inprocess(shard_args(train_only, one, *holdout, "--workers", "1")) == 0
    r = run_cli(shard_args(train_only, two, *holdout, "--workers", "2"))
    assert r.returncode == 0, r.stderr
    assert output_bytes(one) == output_bytes(two)  # same files held out, same bytes, any worker count
    m = load_manifest(one)
    counts = Manifest.of(m)
    assert (counts.split_count("train"), counts.split_count("val")) == (90, 30)  # 12 a class: 3 held out of each
    assert m["params"]["holdout_fraction"] == 0.25 and m["params"]["holdout_seed"] == 7
    val = [s for shard in list_shards(one, "val") for s in _samples(shard)]
    train = [s for shard in list_shards(one, "train") for s in _samples(shard)]
    assert sorted({label for _, label, _ in val}) == list(range(10)) == sorted({label for _, label, _ in train})
    assert not {k for k, _, _ in val} & {k for k, _, _ in train}
    assert load_stats(one).n_pixels == 90 * 256 * 256  # the mean image and PCA saw train only
    other = tmp_path / "other"
    assert run_inprocess(shard_args(train_only, other, "--holdout-fraction", "0.25", "--holdout-seed", "8",
                                         "--workers", "1")) == 0
    assert {k for s in list_shards(other, "val") for k, _, _ in _samples(s)} != {k for k, _, _ in val}


@pytest.mark.parametrize("extra, message", [
    (("--holdout-fraction", "1.0"), "argument --holdout-fraction: must be < 1"),  # the parser's range
    (("--holdout-fraction", "0"), "argument --holdout-fraction: must be > 0"),
    (("--holdout-fraction", "0.5"), "has a val/ folder"),
])
def test_bad_holdout_is_one_line(demo_corpus, tmp_path, capsys, extra, message):
    try:
        status = run_inprocess(shard_args(demo_corpus, tmp_path / "out", *extra))
    except SystemExit as exit_:  # argparse's usage error
        status = exit_.code
    assert status == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not (tmp_path / "out").exists()
