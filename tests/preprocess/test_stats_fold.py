"""The train statistics merged as a stream (`Output.fold_moments`): equal to the in-memory
merge, resumable, and what `preprocess shard` leaves behind is one total, not a file a shard."""

from __future__ import annotations

import shutil

import numpy as np
from shardrun import run_inprocess, shard_args

from preprocess.contract import WORK_DIR, load_stats
from preprocess.output import FOLDED_FILE, Output
from preprocess.stats import Moments, merge_all

SIZE = 16  # moments of 16x16 images: the arithmetic of 256x256 at a fraction of the cost


def random_units(n_units: int, seed: int = 0) -> list[Moments]:
    rng = np.random.default_rng(seed)
    units = []
    for _ in range(n_units):
        m = Moments(SIZE)
        for _ in range(int(rng.integers(1, 6))):
            m.add(rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8))
        units.append(m)
    return units


def assert_same_stats(a, b):
    for name in ("mean_rgb", "cov", "eigvals", "eigvecs", "mean_image"):
        assert np.max(np.abs(getattr(a, name) - getattr(b, name))) <= 1e-9, name
    assert a.n_pixels == b.n_pixels


def test_streamed_merge_of_many_units_equals_the_in_memory_merge(tmp_path):
    units = random_units(300)
    names = [f"train-u{i:06d}" for i in range(len(units))]
    output = Output(tmp_path)
    output.work.mkdir(parents=True)
    for name, m in zip(names, units):
        m.save(output.moments_path(name))
    want = merge_all(units, SIZE).finish()
    # Half now, the rest in a later run (a resumed job): the total carries over exactly.
    assert_same_stats(output.fold_moments(names[:150], SIZE).finish(), merge_all(units[:150], SIZE).finish())
    assert not output.moments_path(names[0]).exists() and output.moments_path(names[200]).exists()
    got = Output(tmp_path).fold_moments(names, SIZE).finish()
    assert_same_stats(got, want)
    assert sorted(p.name for p in output.work.iterdir()) == [FOLDED_FILE]
    # Folding again adds nothing twice, even if a unit's file was rewritten since (a redo).
    units[7].save(output.moments_path(names[7]))
    assert_same_stats(Output(tmp_path).fold_moments(names, SIZE).finish(), want)


def test_shard_keeps_one_total_and_a_rerun_keeps_the_statistics(demo_corpus, demo_shards, tmp_path):
    work = demo_shards / WORK_DIR
    assert not list(work.glob("*-u*.moments.npz")) and (work / FOLDED_FILE).is_file()
    out = tmp_path / "out"
    shutil.copytree(demo_shards, out)
    (out / "train-000002.tar").unlink()  # its unit is redone: new moments, already in the total
    assert run_inprocess(shard_args(demo_corpus, out, "--workers", "1")) == 0
    assert_same_stats(load_stats(out), load_stats(demo_shards))
    assert not list((out / WORK_DIR).glob("*-u*.moments.npz"))
