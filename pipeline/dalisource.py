"""What the DALI backend reads: one batch source for a rank's pipeline.

Used by `pipeline/dali.py` (`trainer train` / `trainer evaluate` with `--backend dali`),
which builds one pipeline per rank for the run. Its JPEGs come from a batch-mode
`fn.external_source`, `BatchSource`, that DALI calls in the thread running the pipeline:
the loader's producer thread (`pipeline.prefetch`), never the trainer's. A call reads
the batch's JPEGs and labels through the split's offsets table into one dense array, a
row a sample, which DALI reads in place (`SampleBytes.batch_into`: one `preadv` a sample
for its JPEG and its label, which copies without the GIL; one array handed to DALI, not
one a sample), parses the labels at once (`parse_labels`), and in
train mode draws the batch's crop offsets, flips and lighting offsets once
(`pipeline.augment.batch_train_params`). The labels and the draw are kept for the loader
under the batch's number (`taken`). Both backends therefore read the same samples in the
same order with the same parameters, and a rank resumes exactly at any batch without a
DALI checkpoint.

Why a batch source in the rank and not DALI's parallel source: DALI's rank deserialises
a parallel source's batch sample by sample in Python (a pickled description of each
sample, then one array each), and did so inside the trainer's `next()`. With real reads
on the 2-core VM that gathered 16-19 k images/s at batch 256; the batch source's reads,
label parse and draw come to several times that (benchmarks/README.md, "The feed off the
trainer's thread"), and no source processes are left to outlive a rank. Why a buffer and
not views into the shards mapped in memory (DALI's own readers map their files): that
was ~15% faster on the VM, but a shuffled batch touches up to 256 of ImageNet's 1,282
shards, so a bounded cache of mappings would map and unmap most of them every batch,
and mappings kept grow the rank's resident size with every page read; a network file
system also reads better with `pread`.

Which samples an epoch reads is the `Schedule`: before each of the pipeline's epochs (its
build, then each `reset()`), the rank writes that epoch's global sample numbers, from its
first batch to be read, to a file in a folder it owns, which the source maps when DALI's
epoch index reaches it. A pass broken off (a `break` after a few batches) is cut short
in the same file: the rank lowers the header's batch count past the batches DALI can
have asked for, takes those few, and resets, so it too keeps its pipeline. An epoch start
writes N/w int64s (1.3 MB for one of 8 ranks at ImageNet size) and parses nothing.
Why not DALI's webdataset reader: it takes its files when its pipeline is built, so a new
epoch's shard order meant a new pipeline (2.3 s an epoch start on an H100) and a re-parse
of the index files.

Samples found damaged (`pipeline.badinput`) are in the source's `damaged` set: their
JPEG is replaced by a blank one and their label by DAMAGED, so their row is masked:
the loss ignores it (train) and `valid` excludes it (eval); the batch keeps its size.
"""

from __future__ import annotations

import collections
import io
import os
import shutil
import weakref
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from common import mptemp
from pipeline.augment import batch_train_params, lighting_offset
from pipeline.base import DAMAGED, parse_label
from pipeline.samplebytes import SampleBytes

SCHEDULE_DIR_PREFIX = "pipeline-dali"
HEADER = 3  # a schedule file: [epoch, first batch, batches to read, sample numbers...]
END = 2  # the header's "batches to read": lowered in place to cut an epoch short
LABEL_WIDTH = 8  # label fields up to this long are parsed in bulk (a class number has at most 5 digits)
# The batches the source keeps, unchanged, after handing them over: DALI reads them in
# place (no_copy) until the outputs of prefetch_queue_depth (2) later runs are taken; 4
# leaves room to spare. Each is a batch of JPEGs (~28 MB at 256 ImageNet images).
HELD_BATCHES = 4
_POW10 = 10 ** np.arange(LABEL_WIDTH, dtype=np.int64)


def schedule_name(generation: int, dali_epoch: int) -> str:
    """The schedule file of DALI's epoch `dali_epoch` of the rank's pipeline `generation`."""
    return f"g{generation}-e{dali_epoch}.npy"


def blank_jpeg(size: int = 256) -> bytes:
    """A grey JPEG of the contract's size: what a damaged sample's row decodes (and then loses)."""
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (size, size), (128, 128, 128)).save(buf, "JPEG", quality=50)
    return buf.getvalue()


def parse_labels(fields: np.ndarray, sizes: np.ndarray, raw, classes: int | None) -> np.ndarray:
    """`pipeline.base.parse_label` of each of a batch's label fields, at once (int64).

    `fields` (n, LABEL_WIDTH) holds each field's first bytes left-aligned and `sizes` their
    lengths. Fields of plain ASCII digits are parsed here; any other (a sign, a space, not
    a number, too long) goes to `parse_label` with its bytes, `raw(j)`: the rule stays that
    function's, and this is only its fast path."""
    width = np.arange(LABEL_WIDTH)
    inside = width < sizes[:, None]
    digit = (fields >= ord("0")) & (fields <= ord("9"))
    plain = (sizes >= 1) & (sizes <= LABEL_WIDTH) & np.all(digit | ~inside, axis=1)
    power = _POW10[np.clip(sizes[:, None] - 1 - width, 0, LABEL_WIDTH - 1)]
    labels = np.where(inside & plain[:, None], (fields.astype(np.int64) - ord("0")) * power, 0).sum(axis=1)
    if classes is not None:
        labels[labels >= classes] = DAMAGED
    for j in np.flatnonzero(~plain):
        labels[j] = parse_label(np.frombuffer(raw(int(j)), np.uint8), classes)
    return labels


class Schedule:
    """The rank's side: the folder of schedule files (and, for shards without a table file,
    the rank's parsed table), removed with the loader or swept once the rank is dead."""

    def __init__(self, index, batch_size: int):
        self.index, self.batch_size = index, batch_size
        self.folder = mptemp.owned_dir(SCHEDULE_DIR_PREFIX)
        weakref.finalize(self, shutil.rmtree, self.folder, True)
        if index.node_shared:
            self.table_path = Path(index.data_dir) / index.table_entry["name"]
        else:  # parsed per rank, written once: mapped by the feed before issue 25 (benchmarks/dali_feed_before.py)
            self.table_path = self.folder / "table.npy"
            np.save(self.table_path, index.table)
        self._written: list[Path] = []

    def cut(self, generation: int, dali_epoch: int, batches: int) -> None:
        """Let DALI's epoch `dali_epoch` end after `batches` batches. The source maps the file
        shared, so the batches it has not been asked for yet see it."""
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
        while len(self._written) > 2:  # the source maps the file it reads: removing it is safe
            self._written.pop(0).unlink(missing_ok=True)


def open_schedule(folder: str, generation: int, dali_epoch: int) -> np.ndarray:
    """The schedule file of DALI's epoch `dali_epoch`, mapped shared (a cut is seen at
    once), as a plain array: a memmap's per-item overhead was half a worker's time."""
    return np.asarray(np.load(Path(folder) / schedule_name(generation, dali_epoch), mmap_mode="r"))



@dataclass
class BatchParams:
    """Train mode's draw for a batch: the reference loader's crop offsets, flips and
    lighting alphas (`pipeline.augment.batch_train_params`) and the lighting offsets."""

    batch_size: int
    seed: int
    rank: int
    lighting_std: float
    matrix: np.ndarray  # augment.lighting_matrix
    outputs: tuple[str, ...]  # of x, y, flip, offset: what the graph takes (DALI warns of unused ones)

    def arrays(self, epoch: int, b: int) -> dict[str, np.ndarray]:
        """Batch b of training epoch `epoch`: x, y, flip (int32), alpha, offset (float32, (n, 3))."""
        p = batch_train_params(self.seed, epoch, self.rank, b, self.batch_size, self.lighting_std)
        return {"x": p.x.astype(np.int32), "y": p.y.astype(np.int32), "flip": p.flip.astype(np.int32),
                "alpha": p.alpha.astype(np.float32),
                "offset": lighting_offset(p.alpha, self.matrix).astype(np.float32)}


class BatchSource:
    """DALI's batch source: batch `info.iteration` of DALI's epoch `info.epoch_idx`, as the
    tuple (one JPEG view a sample, then the arrays named in `params.outputs`). Called in the
    thread that runs the pipeline. What the graph does not take, the batch's labels and the
    whole draw, is kept in `taken[b]` for the loader, which pops it with the batch's images
    (DALI asks for batches ahead of the one it returns)."""

    def __init__(self, folder: Path, generation: int, samples: SampleBytes, batch_size: int,
                 damaged: frozenset[int], blank: bytes, classes: int | None, params: BatchParams | None):
        self.folder, self.generation, self.samples, self.batch_size = folder, generation, samples, batch_size
        self.damaged = np.fromiter(damaged, np.int64, len(damaged))
        self.blank, self.classes, self.params = np.frombuffer(blank, np.uint8), classes, params
        self.taken: dict[int, tuple[np.ndarray, dict | None]] = {}
        self.held: collections.deque = collections.deque(maxlen=HELD_BATCHES)
        self._buffers: collections.deque = collections.deque()
        self._dali_epoch, self._schedule = None, None
        self.cut = False  # whether the JPEG lengths are an output too (`pipeline.dali.read_nodes`)

    def batch(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The JPEGs (row i of one dense array, from its first byte), their lengths ((n, 1)
        int32: the graph slices each row to its JPEG) and the labels (DAMAGED where not a
        class number, or where the sample is known to be damaged) of the samples `ids`."""
        bad = np.isin(ids, self.damaged) if len(self.damaged) else None
        # The oldest of the buffers DALI may still read is reused (HELD_BATCHES of them).
        spare = self._buffers.popleft() if len(self._buffers) == HELD_BATCHES else None
        rows, lengths, fields, sizes, buffer = self.samples.batch_into(ids, spare, LABEL_WIDTH, bad, self.blank)
        self._buffers.append(buffer)
        labels = parse_labels(fields, sizes, lambda j: self.samples.label_bytes(int(ids[j])), self.classes)
        if bad is not None:
            labels[bad] = DAMAGED
        return rows, lengths[:, None], labels

    def __call__(self, info):
        if self._dali_epoch != info.epoch_idx:
            self._dali_epoch = info.epoch_idx
            self._schedule = open_schedule(self.folder, self.generation, info.epoch_idx)
        schedule, n = self._schedule, self.batch_size
        if info.iteration >= schedule[END]:
            raise StopIteration
        epoch, b = int(schedule[0]), int(schedule[1]) + info.iteration
        ids = schedule[HEADER + info.iteration * n : HEADER + (info.iteration + 1) * n]
        rows, lengths, labels = self.batch(ids)
        drawn = self.params.arrays(epoch, b) if self.params is not None else None
        self.taken[b] = (labels, drawn)
        head = (rows, lengths) if self.cut else (rows,)
        out = (*head, *(drawn[k] for k in self.params.outputs)) if drawn is not None else head
        self.held.append(out)
        return out
