"""What DALI's webdataset reader of one rank reads in an epoch: its own shards, nothing more.

Used by the DALI backend (`pipeline/dali.py`) and its damaged-sample recovery
(`pipeline/badinput.py`), in `trainer train` / `trainer evaluate`. DALI's reader parses
every index file it is given when its pipeline is built (about 0.85 KB of reader memory a
sample, 2.5 s a build at ImageNet size); given the whole split and `shard_id=r,
num_shards=w`, each of a node's ranks held the index of every sample. Here a rank's
reader gets only the shards that its range of the epoch sequence (`pipeline/sharding.py`)
touches, as one shard (`num_shards=1`): whole shards by their own index files, and the
partly covered first and last ones by index files cut to the rank's samples. The reader
then yields the same samples in the same order (the shuffle buffer and its seed
unchanged) while parsing 1/w of the split. Damaged samples found by recovery are patched
into those derived files too. Derived files live in a temporary folder owned by the
reader and removed with it (a rank killed outright cannot: the next reader's start sweeps
such folders, `pipeline.mptemp`); only `preprocess.indexfile` reads and writes index files.
"""

from __future__ import annotations

import shutil
import weakref
from pathlib import Path

import numpy as np

from pipeline import mptemp
from pipeline.splitindex import SplitIndex
from preprocess.contract import EXT_IMAGE, EXT_LABEL, DataError
from preprocess.indexfile import Members, read_index, read_index_columns, write_index

INDEX_DIR_PREFIX = "pipeline-idx"
READER = "Reader"  # the reader's name, for checkpoints and error reports
SHUFFLE_BUFFER = 4096  # samples; DALI's buffer shuffle mixes about this far in a rank's range


class RankReader:
    """The reader arguments of one rank for any epoch plan, with damaged samples patched."""

    def __init__(self, index: SplitIndex):
        self.index = index
        self.patches: dict[int, dict[int, Members]] = {}  # shard -> sample -> replacement members
        self._dir: Path | None = None
        self._written: set[Path] = set()
        self._checked: set[int] = set()  # shards whose own index file parsed (DALI reads it as it is)

    def _folder(self) -> Path:
        if self._dir is None:
            self._dir = mptemp.owned_dir(INDEX_DIR_PREFIX)  # a killed rank's is swept by the next
            weakref.finalize(self, shutil.rmtree, self._dir, True)
        return self._dir

    def ranges(self, plan) -> list[tuple[int, int, int]]:
        """(shard, first sample, end sample) of each shard the rank's range touches, in order."""
        out, pos = [], 0
        lo, hi = plan.start, plan.start + plan.size
        for s in plan.shard_order:
            size = int(self.index.sizes[s])
            a, b = max(lo, pos), min(hi, pos + size)
            if a < b:
                out.append((s, a - pos, b - pos))
            pos += size
            if pos >= hi:
                break
        return out

    def _index_path(self, s: int, first: int, end: int, used: set[Path]) -> str:
        patches = self.patches.get(s, {})
        if first == 0 and end == self.index.sizes[s] and not patches:
            if s not in self._checked:  # DALI's own parser fails the build with an assertion
                read_index_columns(self.index.idx[s], (EXT_IMAGE, EXT_LABEL))  # CorruptError naming the fix
                self._checked.add(s)
            return str(self.index.idx[s])
        samples = read_index(self.index.idx[s])
        for i, members in patches.items():
            samples[i] = members
        path = self._folder() / f"{self.index.idx[s].stem}-{first}-{end}.idx"
        write_index(path, samples[first:end])
        used.add(path)
        return str(path)

    def kwargs(self, plan, seed: int, train: bool) -> dict:
        """`fn.readers.webdataset` arguments for the rank's share of the epoch `plan`."""
        used: set[Path] = set()
        ranges = self.ranges(plan)
        index_paths = [self._index_path(s, a, b, used) for s, a, b in ranges]
        for stale in self._written - used:  # last epoch's cut files
            stale.unlink(missing_ok=True)
        self._written = used
        return dict(
            paths=[str(self.index.tars[s]) for s, _, _ in ranges],
            index_paths=index_paths,
            ext=[EXT_IMAGE, EXT_LABEL],
            missing_component_behavior="error",
            shard_id=0,
            num_shards=1,
            stick_to_shard=True,
            random_shuffle=train,
            initial_fill=SHUFFLE_BUFFER if train else 1,
            # Eval repeats the last sample to fill the last batch; those rows are masked invalid.
            pad_last_batch=not train,
            seed=seed,
            name=READER,
        )

    def sample_of(self, source_info: str) -> tuple[int, int]:
        """(shard, sample) of DALI's source_info "PATH.tar:OFFSET:KEY.jpg" (recovery only)."""
        path, _, member = source_info.rsplit(":", 2)
        for s, tar in enumerate(self.index.tars):
            if str(tar) == path:
                samples = read_index(self.index.idx[s])
                names = [next(n for e, _, _, n in members if e == EXT_IMAGE) for members in samples]
                if member in names:
                    return s, names.index(member)
        raise DataError(f"DALI reported a sample from an unknown file: {source_info}")

    def patch(self, s: int, i: int, members: Members) -> None:
        self.patches.setdefault(s, {})[i] = members

    def nearest_good(self, s: int, i: int) -> int:
        bad = self.patches.get(s, {}).keys() | {i}
        good = np.setdiff1d(np.arange(int(self.index.sizes[s])), np.fromiter(bad, np.int64))
        if len(good) == 0:
            raise DataError(f"every JPEG in {self.index.tars[s]} is damaged: re-run `preprocess shard`")
        return int(good[np.argmin(np.abs(good - i))])
