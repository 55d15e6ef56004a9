"""The split's offsets table as a file (preprocess/offsetstable.py): written by `preprocess
shard` with the manifest, mapped (not copied) by every rank and DataLoader worker, refused
when it no longer matches, and optional for shards made without one."""

from __future__ import annotations

import hashlib
import json
import logging
import re
import shutil
from multiprocessing.reduction import ForkingPickler
from pathlib import Path

import numpy as np
from synthetic_shards import relabel

from pipeline import make_loader
from pipeline.splitindex import SplitIndex
from preprocess.cli import main as preprocess_main
from preprocess.contract import MANIFEST_NAME, load_manifest, write_manifest
from preprocess.offsetstable import COLUMNS, table_name
from preprocess.indexfile import read_index_columns
from tests.preprocess.shardrun import run_inprocess, shard_args


def test_preprocess_writes_the_table_its_manifest_names(demo_shards):
    manifest = load_manifest(demo_shards)
    for split in ("train", "val"):
        entry = manifest["splits"][split]["offsets"]
        assert entry["name"] == table_name(split) and entry["rows"] == manifest["splits"][split]["count"]
        index = SplitIndex.read(demo_shards, split)
        assert index.node_shared
        want = np.concatenate([read_index_columns(p, COLUMNS) for p in index.idx])
        assert isinstance(index.table, np.memmap) and (index.table == want).all()


def test_workers_map_the_file_and_receive_no_rows(demo_shards):
    loader = make_loader(demo_shards, backend="reference", batch_size=8, num_workers=1)
    try:
        assert len(ForkingPickler.dumps(loader.index)) < 10_000
        next(iter(loader))
        (worker,) = loader._loader._iterator._workers
        path = str((Path(demo_shards) / table_name("train")).resolve())
        maps = Path(f"/proc/{worker.pid}/maps").read_text()
        assert path in maps  # the worker reads the node's one copy: the page cache of this file
    finally:
        loader.close()


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns(".preprocess"))
    return dst


def _parsed_without_the_table(out: Path, caplog, why: str) -> None:
    """The loader refuses the table with a warning naming it, and reads the index files."""
    caplog.set_level(logging.WARNING)
    index = SplitIndex.read(out, "train")
    want = np.concatenate([read_index_columns(p, COLUMNS) for p in index.idx])
    assert (index.table == want).all() and not index.node_shared
    assert re.search(rf"train\.offsets\.npy {why}.*rerun", caplog.text)


def test_a_damaged_table_is_refused_and_the_index_files_are_read(demo_shards, tmp_path, caplog):
    out = _copy(demo_shards, tmp_path / "shards")
    table = np.load(out / table_name("train"), mmap_mode="r+")
    table[3, 0] += 512  # the reader would read another sample's bytes
    table.flush()
    del table
    _parsed_without_the_table(out, caplog, "differs from the manifest")
    assert preprocess_main(["verify", str(out)]) == 4


def test_a_shard_rewritten_since_the_table_is_read_from_its_index(demo_shards, tmp_path, caplog):
    """A shard rewritten by other means (here a label made longer) moves its members: the old
    table would send the reader to the wrong bytes."""
    out = _copy(demo_shards, tmp_path / "shards")
    relabel(out / "train-000001.tar", 2, b"7 ")
    _parsed_without_the_table(out, caplog, "was made from other index files")


def test_verify_compares_the_table_with_the_index_files(demo_shards, tmp_path):
    """A table whose manifest entry was rewritten to fit it still disagrees with the index files."""
    out = _copy(demo_shards, tmp_path / "shards")
    path = out / table_name("val")
    table = np.load(path)
    table[0, 1] += 1
    np.save(path, table)
    manifest = load_manifest(out)
    entry = manifest["splits"]["val"]["offsets"]
    entry["sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
    write_manifest(out, manifest)
    assert preprocess_main(["verify", str(out)]) == 4


def test_shards_without_a_table_load_per_rank_and_a_rerun_adds_it(demo_corpus, tmp_path):
    out = tmp_path / "shards"
    assert run_inprocess(shard_args(demo_corpus, out)) == 0
    manifest = json.loads((out / MANIFEST_NAME).read_text())
    for split in ("train", "val"):
        del manifest["splits"][split]["offsets"]
        (out / table_name(split)).unlink()
    write_manifest(out, manifest)  # as an output written before tables existed
    index = SplitIndex.read(out, "train")
    assert not index.node_shared
    rows = index.table.copy()
    assert index._table.is_shared()  # parsed once into the rank's shared memory
    before = {p.name: p.stat().st_mtime_ns for p in out.glob("*.tar")}
    assert run_inprocess(shard_args(demo_corpus, out)) == 0
    again = SplitIndex.read(out, "train")
    assert again.node_shared and (again.table == rows).all()
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("*.tar")} == before  # no shard rewritten
