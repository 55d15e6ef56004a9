"""The split's index held once per rank (pipeline/splitindex.py): the same samples as the
per-sample walk it replaced, the same offsets as the index files, shared with the workers."""

from __future__ import annotations

import pickle
from multiprocessing.reduction import ForkingPickler

import numpy as np
import pytest
import torch

from pipeline import make_loader
from pipeline.sharding import derive_seed, plan_epoch, rank_positions
from pipeline.splitindex import SplitIndex
from preprocess.offsetstable import COLUMNS
from preprocess.indexfile import read_index


def walk(order: list[int], sizes, position: int) -> tuple[int, int]:
    """`EpochPlan.locate` before issue 12, one sample at a time: the oracle."""
    for s in order:
        if position < sizes[s]:
            return s, position
        position -= sizes[s]
    raise IndexError("position past the end of the split")


@pytest.mark.parametrize("seed", range(4))
def test_locate_gives_the_walks_samples_on_random_plans(seed):
    rng = np.random.default_rng(seed)
    sizes = rng.integers(1, 60, rng.integers(2, 40))
    for world_size in (1, 2, 3, 5):
        for rank in range(world_size):
            for epoch in range(3):
                for train in (True, False):
                    plan = plan_epoch(sizes, train=train, batch_size=4, rank=rank, world_size=world_size,
                                      seed=seed, epoch=epoch)
                    positions = rank_positions(plan, 4, train, derive_seed(seed, epoch, rank, 3))
                    shards, samples = plan.locate(positions)
                    want = [walk(plan.shard_order, sizes, int(p)) for p in positions]
                    assert list(zip(shards.tolist(), samples.tolist())) == want


def test_locate_rejects_positions_outside_the_epoch():
    plan = plan_epoch([3, 4], train=True, batch_size=1, rank=0, world_size=1, seed=0, epoch=0)
    with pytest.raises(IndexError):
        plan.locate(np.array([7]))


@pytest.mark.parametrize("split", ["train", "val"])
def test_table_holds_every_index_lines_offsets(demo_shards, split):
    """`preprocess shard` output (jpg, cls and json members): every row against the Python parse."""
    index = SplitIndex.read(demo_shards, split)
    want = [[v for ext in COLUMNS for e, offset, size, _ in members if e == ext for v in (offset, size)]
            for path in index.idx for members in read_index(path)]
    assert index.table.tolist() == want
    assert index.sizes.tolist() == [len(read_index(p)) for p in index.idx]


def test_table_is_shared_memory_and_travels_as_a_handle(shard_dir):
    """A DataLoader worker gets the rank's table as a file descriptor, not a copy of its rows."""
    index = SplitIndex.read(shard_dir, "train")
    index.table  # noqa: B018
    assert index._table.is_shared()
    big = SplitIndex(index.tars, index.idx, index.sizes, torch.zeros((1_000_000, 4), dtype=torch.int64).share_memory_())
    assert len(pickle.dumps(big)) > 32_000_000  # the rows themselves
    assert len(ForkingPickler.dumps(big)) < 10_000  # what a worker receives


def test_reference_loader_shares_its_table_with_its_workers(shard_dir):
    loader = make_loader(shard_dir, backend="reference", batch_size=8, num_workers=1)
    assert loader.maker.index is loader.index and loader.index._table.is_shared()
    assert len(ForkingPickler.dumps(loader.maker)) < 1_000_000  # the mean image (768 KB), not the index


def test_dali_rank_reads_what_the_reference_reads(shard_dir):
    """Each DALI rank's epoch is the reference rank's: the same sample numbers, batch after
    batch, for 2 and 3 ranks over two epochs (its source reads them through the table)."""
    for world_size in (2, 3):
        for rank in range(world_size):
            kw = dict(batch_size=4, rank=rank, world_size=world_size, seed=2)
            dali, ref = make_loader(shard_dir, backend="dali", **kw), make_loader(shard_dir, backend="reference", **kw)
            for epoch in (0, 1):
                dali.set_epoch(epoch)
                ref.set_epoch(epoch)
                plan = ref.plan()
                positions = rank_positions(plan, 4, True, ref.epoch_seed(3))
                assert np.array_equal(dali.epoch_ids(dali.plan()), ref.index.global_id(*plan.locate(positions)))
            dali.close()
            ref.close()


def test_dali_rank_maps_the_nodes_table_and_parses_no_index(demo_shards, shard_dir):
    """The rank maps the split's table file (one page-cache copy a node), and its source
    processes map the same file by its path; shards without one (here: no manifest) get
    the rank's parsed table written once into its schedule folder for them to map."""
    loader = make_loader(demo_shards, backend="dali", batch_size=8)
    assert len([y for _, y in loader]) == len(loader)
    assert loader.index.node_shared and isinstance(loader.index.table, np.memmap)
    assert loader.schedule.table_path == demo_shards / loader.index.table_entry["name"]
    loader.close()
    bare = make_loader(shard_dir, backend="dali", batch_size=8)
    assert not bare.index.node_shared and bare.schedule.table_path.parent == bare.schedule.folder
    assert np.array_equal(np.load(bare.schedule.table_path), bare.index.table)
    assert len([y for _, y in bare]) == len(bare)
