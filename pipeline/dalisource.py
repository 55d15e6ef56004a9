"""What the DALI backend reads: one sample source for a rank's whole run.

Used by `pipeline/dali.py` (`trainer train` / `trainer evaluate` with `--backend dali`),
which builds one pipeline per rank for the run. Its samples come from a parallel
`fn.external_source`: `SampleSource`, called once per sample in DALI's Python worker
processes, reads the sample's JPEG and label through the split's offsets table
(`pipeline.samplebytes`) and returns them as one array. In train mode `BatchParams`, a
batch source called in the rank, gives each batch's crop offsets, flips and lighting
offsets (`pipeline.augment.batch_train_params`). Both backends therefore read the same
samples in the same order with the same parameters, and a rank resumes exactly at any
batch without a DALI checkpoint.

Why one output a sample: DALI's rank gathers a parallel source's samples one output at a
time, in Python, and on a GPU that cost can bound the pipeline. On an H100,
six outputs a sample held it to 9,925 images/s (two: 22,716; DALI's own reader 23,678).
With the decode taken out and the workers' reads too (cached samples), the 2-core VM's
rank gathered 10.4 k images/s at six outputs, 17.2 k at two with the parameters unpacked
in the graph, and 25.8 k at one output plus `BatchParams` (benchmarks/README.md).

Which samples an epoch reads is the `Schedule`: before each of the pipeline's epochs (its
build, then each `reset()`), the rank writes that epoch's global sample numbers, from its
first batch to be read, to a file in a folder it owns; the workers map the file when
DALI's epoch index reaches it. A pass broken off (a `break` after a few batches) is cut
short in the same file: the rank lowers the header's batch count past the batches DALI
can have asked for, takes those few, and resets, so it too keeps its pipeline. An epoch
start writes N/w int64s (1.3 MB for one of 8 ranks at ImageNet size) and parses nothing.
Why not DALI's webdataset reader: it takes its
files when its pipeline is built, so a new epoch's shard order meant a new pipeline (2.3 s
an epoch start on an H100) and a re-parse of the index files; feeding through the table
kept 0.978x the reader's images/s there (benchmarks/README.md, "GPU check").

Workers are spawned (DALI's and CUDA's threads make fork unsafe), import numpy and this
package's light modules only, and die with the rank (PR_SET_PDEATHSIG): without it,
DALI's workers outlived a killed rank. Samples found damaged (`pipeline.badinput`) are in
the source's `damaged` set: their JPEG is replaced by a blank one and their label by bytes
that are not a number, so their row is dropped (train) or masked (eval) while the batch
keeps its size.
"""

from __future__ import annotations

import io
import os
import shutil
import weakref
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pipeline import mptemp
from preprocess import procs
from pipeline.augment import batch_train_params, lighting_offset
from pipeline.samplebytes import SampleBytes
from preprocess.offsetstable import map_table

SCHEDULE_DIR_PREFIX = "pipeline-dali"
HEADER = 3  # a schedule file: [epoch, first batch, batches to read, sample numbers...]
END = 2  # the header's "batches to read": lowered in place to cut an epoch short
NOT_A_LABEL = b"\xff\xd8"  # a damaged sample's label: not ASCII digits
# A sample is one array: its label's bytes padded with spaces to LABEL_BYTES (int()
# ignores them), then its JPEG; the graph slices the two apart.
LABEL_BYTES = 8  # a class number has at most 5 digits (21,841 classes in Fall 2011)


def schedule_name(generation: int, dali_epoch: int) -> str:
    """The schedule file of DALI's epoch `dali_epoch` of the rank's pipeline `generation`."""
    return f"g{generation}-e{dali_epoch}.npy"


def blank_jpeg(size: int = 256) -> bytes:
    """A grey JPEG of the contract's size: what a damaged sample's row decodes (and then loses)."""
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (size, size), (128, 128, 128)).save(buf, "JPEG", quality=50)
    return buf.getvalue()


class Schedule:
    """The rank's side: the folder of schedule files (and, for shards without a table file,
    the rank's parsed table), removed with the loader or swept once the rank is dead."""

    def __init__(self, index, batch_size: int):
        self.index, self.batch_size = index, batch_size
        self.folder = mptemp.owned_dir(SCHEDULE_DIR_PREFIX)
        weakref.finalize(self, shutil.rmtree, self.folder, True)
        if index.node_shared:
            self.table_path = Path(index.data_dir) / index.table_entry["name"]
        else:  # parsed per rank: written once so that the workers can map it
            self.table_path = self.folder / "table.npy"
            np.save(self.table_path, index.table)
        self._written: list[Path] = []

    def cut(self, generation: int, dali_epoch: int, batches: int) -> None:
        """Let DALI's epoch `dali_epoch` end after `batches` batches. The workers map the file
        shared, so the batches they have not started yet see it."""
        header = np.load(self.path(generation, dali_epoch), mmap_mode="r+")
        header[END] = min(int(header[END]), batches)
        header.flush()

    def path(self, generation: int, dali_epoch: int) -> Path:
        return self.folder / schedule_name(generation, dali_epoch)

    def write(self, generation: int, dali_epoch: int, epoch: int, first_batch: int, ids: np.ndarray) -> None:
        """The sample numbers DALI's epoch `dali_epoch` of pipeline `generation` reads:
        training epoch `epoch` from batch `first_batch` on."""
        path = self.path(generation, dali_epoch)
        tmp = path.with_suffix(".tmp")
        batches = len(ids) // self.batch_size
        with open(tmp, "wb") as f:
            np.save(f, np.concatenate([[epoch, first_batch, batches], np.asarray(ids, np.int64)]))
        os.replace(tmp, path)
        self._written.append(path)
        while len(self._written) > 2:  # a worker maps the file it reads: removing it is safe
            self._written.pop(0).unlink(missing_ok=True)


def open_schedule(folder: str, generation: int, dali_epoch: int) -> np.ndarray:
    """The schedule file of DALI's epoch `dali_epoch`, mapped shared (a cut is seen at
    once), as a plain array: a memmap's per-item overhead was half a worker's time."""
    return np.asarray(np.load(Path(folder) / schedule_name(generation, dali_epoch), mmap_mode="r"))


def labelled(label: bytes, jpeg: bytes) -> np.ndarray:
    """One sample as the source returns it: the label field, then the JPEG."""
    out = np.empty(LABEL_BYTES + len(jpeg), np.uint8)
    label = label if len(label) <= LABEL_BYTES else NOT_A_LABEL  # not a class number either way
    out[:LABEL_BYTES] = ord(" ")
    out[: len(label)] = np.frombuffer(label, np.uint8)
    out[LABEL_BYTES:] = np.frombuffer(jpeg, np.uint8)
    return out


@dataclass
class SampleSource:
    """The workers' side: sample `info.idx_in_epoch` of DALI's epoch `info.epoch_idx`, as
    one array, `labelled(label, JPEG)`."""

    folder: str
    generation: int
    tars: list[str]
    starts: np.ndarray
    table_path: str
    rows: int
    batch_size: int
    damaged: frozenset[int]
    blank: bytes
    _cache: dict = field(default_factory=dict, repr=False)

    def __getstate__(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "_cache"}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state, _cache={})
        procs.die_with_parent()  # unpickled in a DALI worker: go when the rank goes

    def _epoch(self, dali_epoch: int) -> np.ndarray:
        c = self._cache
        if c.get("dali_epoch") != dali_epoch:
            c.update(dali_epoch=dali_epoch, schedule=open_schedule(self.folder, self.generation, dali_epoch))
        if "bytes" not in c:
            table = np.asarray(map_table(self.table_path, self.rows))
            c.update(bytes=SampleBytes(self.tars, self.starts, table), blank=labelled(NOT_A_LABEL, self.blank))
        return c["schedule"]

    def __call__(self, info):
        schedule = self._epoch(info.epoch_idx)
        i = info.idx_in_epoch
        if i // self.batch_size >= schedule[END]:
            raise StopIteration
        g = int(schedule[HEADER + i])
        if g in self.damaged:
            return self._cache["blank"]
        reads: SampleBytes = self._cache["bytes"]
        return labelled(reads.label_bytes(g), reads.jpeg_bytes(g))


@dataclass
class BatchParams:
    """The rank's side in train mode, a batch source: batch `info.iteration` of DALI's epoch
    `info.epoch_idx` as the arrays named in `outputs`, the reference loader's draw. Per-sample values from the source processes would cost the rank per sample
    and output (see the module's docstring); these cost it one small copy each a batch."""

    folder: str
    generation: int
    batch_size: int
    seed: int
    rank: int
    lighting_std: float
    matrix: np.ndarray  # augment.lighting_matrix
    outputs: tuple[str, ...]  # of x, y, flip, offset: what the graph takes (DALI warns of unused ones)
    _cache: dict = field(default_factory=dict, repr=False)

    def arrays(self, epoch: int, b: int) -> dict[str, np.ndarray]:
        """Batch b of training epoch `epoch`: x, y, flip (int32), alpha, offset (float32, (n, 3))."""
        p = batch_train_params(self.seed, epoch, self.rank, b, self.batch_size, self.lighting_std)
        return {"x": p.x.astype(np.int32), "y": p.y.astype(np.int32), "flip": p.flip.astype(np.int32),
                "alpha": p.alpha.astype(np.float32),
                "offset": lighting_offset(p.alpha, self.matrix).astype(np.float32)}

    def __call__(self, info):
        c = self._cache
        if c.get("dali_epoch") != info.epoch_idx:
            c.update(dali_epoch=info.epoch_idx, schedule=open_schedule(self.folder, self.generation, info.epoch_idx))
        schedule = c["schedule"]
        if info.iteration >= schedule[END]:
            raise StopIteration
        p = self.arrays(int(schedule[0]), int(schedule[1]) + info.iteration)
        return tuple(p[name] for name in self.outputs)
