"""`preprocess shard`: source -> plan -> units in worker processes -> placed shards -> manifest.

Each worker writes whole units (see `preprocess.shards`); the main process only counts
progress and renames finished pieces into place in plan order, so the bytes never depend
on the number of workers or on how often the run was interrupted. With `--part i --parts n`
a run does every n-th unit and leaves them in OUT/.preprocess/ for `preprocess stats --merge`.
"""

from __future__ import annotations

import collections
import ctypes
import gc
import multiprocessing as mp
import os
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from preprocess import holdout, image, shards, sources
from preprocess.output import Output
from preprocess.progress import Progress


@dataclass
class ShardConfig:
    src: Path
    out: Path
    options: shards.Options = field(default_factory=shards.Options)
    workers: int = 1
    part: int = 0
    parts: int = 1
    val_labels: Path | None = None
    synsets: Path | None = None
    overwrite: bool = False
    max_reject_fraction: float = 0.001
    progress: str = "auto"


@dataclass
class Summary:
    manifest: dict | None
    rejects_by_reason: dict
    inputs: int
    processed: int  # inputs decoded in this run (skipped units excluded)
    seconds: float

    @property
    def rejected(self) -> int:
        return sum(self.rejects_by_reason.values())


def _source_info(source: sources.Source, units: list[shards.Unit]) -> dict:
    return {
        "classes": [{"index": c.index, "wnid": c.wnid, "name": c.name} for c in source.classes],
        "units": [u.name for u in units],
        "rejects": source.rejects,
        "inputs": {split: len(s) + sum(r["split"] == split for r in source.rejects)
                   for split, s in source.samples.items()},
    }


def _resume_scan(output: Output, units: list[shards.Unit], placing: bool) -> dict[str, dict]:
    """Records of the units whose output verifies; the rest is redone."""
    done, cursor = {}, {}
    for unit in units:
        first = cursor.get(unit.split, 0) if placing else None
        record = output.record(unit.name)
        if record is not None and output.verify_unit(record, first):
            done[unit.name] = record
        # A record's piece count holds even when its files are damaged (a redo gives the
        # same pieces), so later units can still be found at their shard numbers.
        cursor[unit.split] = first + len(record["pieces"]) if record is not None and first is not None else None
    return done


class _Placer:
    """Renames finished units' pieces to final shard names, strictly in plan order."""

    def __init__(self, output: Output, units: list[shards.Unit]):
        self.output, self.units, self.k = output, units, 0
        self.next_index: dict[str, int] = collections.defaultdict(int)

    def advance(self, records: dict[str, dict]) -> None:
        while self.k < len(self.units) and self.units[self.k].name in records:
            record = records[self.units[self.k].name]
            self.output.place_unit(record, self.next_index[record["split"]])
            self.next_index[record["split"]] += len(record["pieces"])
            self.k += 1


# --- worker processes ------------------------------------------------------------------
_counter = None


def _init_worker(counter) -> None:
    global _counter
    _counter = counter
    image.set_threads(1)
    if sys.platform.startswith("linux"):
        # Die with the main process (e.g. on SIGKILL) instead of finishing orphaned work.
        try:
            ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        except (AttributeError, OSError):
            pass  # a libc without prctl: orphans finish their unit, which is harmless


def _count(n: int) -> None:
    with _counter.get_lock():
        _counter.value += n


def _work(args) -> dict:
    unit, src, work, options = args
    return shards.process_unit(unit, src, work, options, progress=_count)


def _run_units(todo, cfg: ShardConfig, output: Output, records: dict, on_done) -> None:
    total = sum(u.count for u in todo)
    bar = Progress(total, "preprocess shard", cfg.progress)
    try:
        if cfg.workers <= 1 or len(todo) <= 1:
            before = image.set_threads(1)  # per-core work; the caller's setting comes back after
            try:
                for unit in todo:
                    records[unit.name] = shards.process_unit(unit, cfg.src, output.work, cfg.options, bar.update)
                    on_done()
            finally:
                image.set_threads(before)
            return
        image.set_threads(None)  # import torch once here; forked workers share its pages
        # ... and keep sharing them: a worker's full collection would otherwise write to
        # (copy) every page holding an object made before the fork (what gc.freeze is for;
        # measured: 52 -> 14 MB private a worker).
        gc.collect()
        gc.freeze()
        try:
            _run_pool(todo, cfg, output, records, on_done, bar)
        finally:
            gc.unfreeze()
    finally:
        bar.close()


def _run_pool(todo, cfg: ShardConfig, output: Output, records: dict, on_done, bar) -> None:
    ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
    counter = ctx.Value("q", 0)
    with ctx.Pool(min(cfg.workers, len(todo)), _init_worker, (counter,)) as pool:
        pending = [(u, pool.apply_async(_work, ((u, cfg.src, output.work, cfg.options),))) for u in todo]
        seen = 0
        while pending:
            pending[0][1].wait(0.25)
            still = []
            for unit, result in pending:
                if result.ready():
                    records[unit.name] = result.get()  # re-raises a worker's exception
                else:
                    still.append((unit, result))
            pending = still
            bar.update(counter.value - seen)
            seen = counter.value
            on_done()


def shard(cfg: ShardConfig) -> Summary:
    """The whole `preprocess shard` job; raises SourceError/OutputError with one-line messages."""
    start = time.monotonic()
    sources.check_out_outside_src(cfg.src, cfg.out)
    if cfg.options.holdout_fraction:
        holdout.check(cfg.src)
    source = sources.discover(cfg.src, cfg.val_labels, cfg.synsets)
    if cfg.options.holdout_fraction:
        source = holdout.split(source, cfg.options.holdout_fraction, cfg.options.holdout_seed)
    units = shards.plan(source, cfg.options)
    output = Output(cfg.out)
    settings = {"params": cfg.options.params(), "source_digest": source.digest()}
    output.open(settings, _source_info(source, units), cfg.overwrite)
    mine = [u for k, u in enumerate(units) if k % cfg.parts == cfg.part]
    placing = cfg.parts == 1
    records = _resume_scan(output, mine, placing)
    todo = [u for u in mine if u.name not in records]
    placer = _Placer(output, units)
    try:
        _run_units(todo, cfg, output, records, (lambda: placer.advance(records)) if placing else (lambda: None))
    except BaseException:
        output.sweep()  # what the pool's workers, stopped mid-unit, left (they are dead now)
        raise
    info = output.source_info()
    manifest = None
    if placing:
        placer.advance(records)
        manifest = output.write_dataset(settings["params"], info, [records[u.name] for u in units])
    # Workers of a run killed just before this one were perhaps zombies when the first sweep
    # ran (alive to it, since a zombie's pid exists until reaped); they are gone by now.
    output.sweep()
    reasons = collections.Counter(r["reason"] for r in info["rejects"])
    reasons.update(r["reason"] for u in mine for r in records[u.name]["rejects"])
    return Summary(manifest, dict(reasons), sum(info["inputs"].values()),
                   sum(u.count for u in todo), time.monotonic() - start)


def default_workers() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
