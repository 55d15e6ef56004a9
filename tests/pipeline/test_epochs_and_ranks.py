"""Epoch semantics of both backends: ranks, drop_last, eval padding, order per epoch, resume."""

from __future__ import annotations

import os
import pickle

import pytest
import torch
from synthetic_shards import TRAIN_SIZES, VAL_SIZES

from pipeline import make_loader

BACKENDS = ["dali", "reference"]
N_TRAIN, N_VAL = sum(TRAIN_SIZES), sum(VAL_SIZES)


def epoch_labels(loader) -> list[int]:
    return [n for batch in loader for n in batch[1].tolist()]


def rank_loaders(shard_dir, backend, world_size, **kw):
    return [make_loader(shard_dir, backend=backend, rank=r, world_size=world_size, num_workers=2, **kw)
            for r in range(world_size)]  # fmt: skip


@pytest.mark.parametrize("backend", BACKENDS)
def test_train_two_ranks_each_sample_at_most_once_equal_lengths(shard_dir, backend):
    loaders = rank_loaders(shard_dir, backend, 2, batch_size=8)
    assert len(loaders[0]) == len(loaders[1]) == (N_TRAIN // 2) // 8
    for epoch in (0, 1):
        seen = []
        for loader in loaders:
            loader.set_epoch(epoch)
            labels = epoch_labels(loader)
            assert len(labels) == loader.num_samples == len(loader) * 8
            seen += labels
        assert len(set(seen)) == len(seen), "a sample was seen twice in one epoch"
        assert set(seen) <= set(range(N_TRAIN))
        assert N_TRAIN - len(seen) < 2 * 8  # only each rank's last partial batch is dropped


@pytest.mark.parametrize("backend", BACKENDS)
def test_train_every_sample_exactly_once_when_batches_divide(shard_dir, backend):
    # 117 samples = 3 ranks x 39 batches of 1: nothing to drop, so exactly once.
    loaders = rank_loaders(shard_dir, backend, 3, batch_size=1)
    per_rank = [epoch_labels(loader) for loader in loaders]
    assert sorted(sum(per_rank, [])) == list(range(N_TRAIN))
    if backend == "reference":  # same split of samples over ranks as DALI
        dali = rank_loaders(shard_dir, "dali", 3, batch_size=1)
        assert [set(r) for r in per_rank] == [set(epoch_labels(d)) for d in dali]


@pytest.mark.parametrize("backend", BACKENDS)
def test_order_differs_between_epochs_and_is_reproducible(shard_dir, backend):
    a = make_loader(shard_dir, backend=backend, batch_size=8, seed=7)
    e0, e1 = epoch_labels(a), (a.set_epoch(1), epoch_labels(a))[1]
    assert e0 != e1
    b = make_loader(shard_dir, backend=backend, batch_size=8, seed=7)
    b.set_epoch(1)  # directly, without running epoch 0
    assert epoch_labels(b) == e1
    c = make_loader(shard_dir, backend=backend, batch_size=8, seed=8)
    assert epoch_labels(c) != e0


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("world_size", [2, 3])
def test_eval_every_val_sample_exactly_once_across_ranks(shard_dir, backend, world_size):
    loaders = rank_loaders(shard_dir, backend, world_size, split="val", mode="center", batch_size=8)
    assert len({len(loader) for loader in loaders}) == 1, "ranks must run the same number of batches"
    seen = []
    for loader in loaders:
        real = 0
        for images, labels, valid in loader:
            assert valid.dtype == torch.bool and len(valid) == len(labels) == len(images)
            seen += labels[valid].tolist()
            real += int(valid.sum())
        assert real == loader.num_samples
    assert sorted(seen) == list(range(N_TRAIN, N_TRAIN + N_VAL))


# Both backends resume from (epoch, batch) alone: DALI's schedule starts at the batch.
@pytest.mark.parametrize("backend", BACKENDS)
def test_mid_epoch_resume_neither_repeats_nor_skips(shard_dir, backend):
    kw = dict(backend=backend, batch_size=8, seed=5)
    full = make_loader(shard_dir, **kw)
    full.set_epoch(2)
    want = [(x.clone(), y.clone()) for x, y in full]

    first = make_loader(shard_dir, **kw)
    first.set_epoch(2)
    it = iter(first)
    got = [next(it) for _ in range(5)]
    state = first.state_dict()
    assert state["epoch"] == 2 and state["batch"] == 5
    assert len(pickle.dumps(state)) < 64_000, "state must stay small"
    del it, first

    resumed = make_loader(shard_dir, **kw)
    resumed.load_state_dict(state)
    resumed.set_epoch(2)
    got += list(resumed)
    assert [y.tolist() for _, y in got] == [y.tolist() for _, y in want]
    for (gx, _), (wx, _) in zip(got, want):  # same crops, flips and lighting too
        assert torch.equal(gx, wx)
    resumed.set_epoch(3)
    assert len(epoch_labels(resumed)) == resumed.num_samples


@pytest.mark.parametrize("backend, device, cores, ranks, want", [
    ("dali", "cuda", 128, 8, 8),   # an 8-GPU node: 16 cores a GPU, the measured 8 threads
    ("dali", "cuda:3", 16, 2, 6),  # 8 cores a GPU: 6 threads + the feed thread + the trainer
    ("dali", "cuda", 48, 8, 4),    # 6 a GPU: 4 threads + the feed thread + the trainer
    ("reference", "cuda", 16, 8, 1),  # 2 a rank: one worker process + the trainer
    ("reference", "cpu", 12, 2, 4),
    ("dali", "cuda", 2, 1, 1),
    ("dali", "cpu", 64, 1, 4),     # DALI's CPU mode and the reference loader: as before
    ("reference", "cuda", 64, 1, 4),
])
def test_auto_workers(monkeypatch, backend, device, cores, ranks, want):
    from pipeline.loader import auto_workers

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(cores)))
    assert auto_workers(backend, device, ranks) == want
