"""The DALI backend's feed before issue 25, kept as the baseline of `dali_source_probe.py`.

Until then (commit 38e6ade) the DALI backend's samples came from a parallel
`fn.external_source`: DALI's Python worker processes read each sample (its label field,
then its JPEG, as one array) through the offsets table, and DALI's rank gathered them
sample by sample inside `pipe.run()`, in the trainer's thread. The labels were parsed row
by row with `pipeline.base.parse_label`, and the batch's parameters were drawn twice: by
a batch source for the graph and again by the loader for `last_params`. This module is
that feed, unchanged but for living here; the product's is `pipeline.dalisource`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from nvidia.dali import fn, types

from common import procs
from pipeline.base import parse_label
from pipeline.dali import PARAM_TYPES
from pipeline.dalisource import END, HEADER, open_schedule
from pipeline.samplebytes import SampleBytes
from preprocess.offsetstable import map_table

LABEL_BYTES = 8
NOT_A_LABEL = b"\xff\xd8"


def labelled(label: bytes, jpeg: bytes) -> np.ndarray:
    out = np.empty(LABEL_BYTES + len(jpeg), np.uint8)
    label = label if len(label) <= LABEL_BYTES else NOT_A_LABEL
    out[:LABEL_BYTES] = ord(" ")
    out[: len(label)] = np.frombuffer(label, np.uint8)
    out[LABEL_BYTES:] = np.frombuffer(jpeg, np.uint8)
    return out


@dataclass
class SampleSource:
    """The workers' side: sample `info.idx_in_epoch` of DALI's epoch, `labelled(label, JPEG)`."""

    folder: str
    generation: int
    tars: list[str]
    starts: np.ndarray
    table_path: str
    rows: int
    batch_size: int
    _cache: dict = field(default_factory=dict, repr=False)

    def __getstate__(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "_cache"}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state, _cache={})
        procs.die_with_parent()

    def __call__(self, info):
        c = self._cache
        if c.get("dali_epoch") != info.epoch_idx:
            c.update(dali_epoch=info.epoch_idx, schedule=open_schedule(self.folder, self.generation, info.epoch_idx))
        if "bytes" not in c:
            c["bytes"] = SampleBytes(self.tars, self.starts, np.asarray(map_table(self.table_path, self.rows)))
        schedule, i = c["schedule"], info.idx_in_epoch
        if i // self.batch_size >= schedule[END]:
            raise StopIteration
        g = int(schedule[HEADER + i])
        return labelled(c["bytes"].label_bytes(g), c["bytes"].jpeg_bytes(g))


@dataclass
class ScheduledParams:
    """The old batch source of parameters: the schedule's batch, `BatchParams.arrays`."""

    folder: str
    generation: int
    params: object  # pipeline.dalisource.BatchParams
    _cache: dict = field(default_factory=dict, repr=False)

    def __call__(self, info):
        c = self._cache
        if c.get("dali_epoch") != info.epoch_idx:
            c.update(dali_epoch=info.epoch_idx, schedule=open_schedule(self.folder, self.generation, info.epoch_idx))
        schedule = c["schedule"]
        if info.iteration >= schedule[END]:
            raise StopIteration
        p = self.params.arrays(int(schedule[0]), int(schedule[1]) + info.iteration)
        return tuple(p[name] for name in self.params.outputs)


def read_nodes(loader, params) -> dict:
    """The old graph inputs for `loader` (a DaliLoader whose epoch-0 schedule is written)."""
    index = loader.index
    source = SampleSource(str(loader.schedule.folder), loader._generation, [str(t) for t in index.tars],
                          index.starts, str(loader.schedule.table_path), index.total, loader.cfg.batch_size)
    sample = fn.external_source(source=source, batch=False, parallel=True, dtype=types.UINT8)
    nodes = {"jpg": sample[LABEL_BYTES:], "cls": sample[0:LABEL_BYTES]}
    outs = fn.external_source(source=ScheduledParams(str(loader.schedule.folder), loader._generation, params),
                              num_outputs=len(params.outputs), batch=True, batch_info=True,
                              dtype=[PARAM_TYPES[k] for k in params.outputs])
    nodes.update(zip(params.outputs, outs))
    return nodes


def take(outs, params, b: int, classes: int | None):
    """What the old loader did in the rank after `pipe.run()`: labels row by row, the second draw."""
    rows = np.array(outs[1].as_tensor())
    return [parse_label(row, classes) for row in rows], params.arrays(0, b)
