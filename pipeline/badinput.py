"""Damaged JPEGs inside shards under DALI: find them, report shard and key, skip them.

Used by the DALI backend of `pipeline.make_loader` (`trainer train`/`evaluate`). DALI's
decoder fails the whole batch and cannot drop a sample (NVIDIA/DALI#3913), so when a
batch fails, the loader (`pipeline/dali.py`) drops its pipeline and asks `DaliRecovery`
to (1) replay the epoch's reader, without decoding, from the last periodic checkpoint up
to that batch and decode its samples one by one, on the loader's device, to find the bad
ones; (2) patch the rank's reader (`pipeline/dalireader.py`) so that the bad sample's
JPEG points at a good sample of the same shard and its label at bytes that are not a
number: the row comes out labelled DAMAGED and the loader drops (train) or masks (eval)
it, while sample counts, the reader's order and DALI checkpoints stay valid. The loader
then rebuilds its pipeline from the last periodic checkpoint and replays to the failed
batch. Rare by construction: `preprocess shard` re-encodes every image, so this is for
disk or copy corruption. Recovery gets plain arguments (the rank's reader, the batch
size, the device), not the loader.
"""

from __future__ import annotations

import logging

import numpy as np
from nvidia.dali import fn, types
from nvidia.dali.pipeline import Pipeline

from pipeline.dalireader import READER, RankReader
from pipeline.readerstate import graft_reader_state
from preprocess.contract import EXT_IMAGE, EXT_LABEL, DataError
from preprocess.indexfile import read_index

log = logging.getLogger(__name__)
CHECKPOINT_EVERY = 64  # batches between recovery checkpoints (one costs a few ms)
MAX_FAILURES_PER_BATCH = 8


class DaliRecovery:
    """Finds the damaged samples of a failed batch and patches them out of the rank's reader."""

    def __init__(self, reader: RankReader, batch_size: int, device_id: int | None):
        self.reader, self.batch_size, self.device_id = reader, batch_size, device_id

    def repair(self, reader_kwargs: dict, epoch: int, b: int, checkpoint: tuple[int, bytes | None], err) -> list[str]:
        """Patch the damaged samples of batch b out of the reader; their "shard:key" names.
        `checkpoint` is (batch, DALI checkpoint before it) of the failed pipeline."""
        found = self._locate(reader_kwargs, epoch, b, checkpoint)
        if not found:
            raise DataError(f"DALI failed on batch {b} of epoch {epoch} "
                            f"and no undecodable sample was found in it: {err}") from err
        return [self._patch(s, i) for s, i in found]

    # -- finding the damaged samples ---------------------------------------------------
    def _locate(self, reader_kwargs: dict, epoch: int, b: int, checkpoint) -> list[tuple[int, int]]:
        """(shard number, sample number) of each sample of batch b that does not decode."""
        probe, first = self._probe(reader_kwargs, checkpoint)
        for _ in range(first, b):
            probe.run()
        jpgs, infos = probe.run()
        decoder = self.decoder()
        found = [self.reader.sample_of(bytes(np.array(info)).decode())
                 for data, info in zip(jpgs, infos) if not decoder.decodes(np.array(data))]
        log.info("batch %d of epoch %d failed: reader replayed from batch %d, %d samples decoded one by one "
                 "(%d decoder builds), %d damaged", b, epoch, first, len(jpgs), decoder.builds, len(found))
        return found

    def decoder(self) -> SampleDecoder:
        return SampleDecoder(self.device_id)  # the loader's GPU, where it decodes

    def _probe(self, reader_kwargs: dict, checkpoint) -> tuple[Pipeline, int]:
        """A reading-only copy of the epoch's pipeline, and the batch it stands before: the
        last periodic checkpoint's, so that a failure late in an epoch does not replay the
        whole epoch; batch 0 where there is none yet (or DALI refuses the graft)."""

        def probe(state: bytes | None = None) -> Pipeline:
            pipe = Pipeline(batch_size=self.batch_size, num_threads=1, device_id=None,
                            enable_checkpointing=True, checkpoint=state)
            with pipe:
                jpg, _ = fn.readers.webdataset(**reader_kwargs)
                pipe.set_outputs(jpg, fn.get_property(jpg, key="source_info"))
            pipe.build()
            return pipe

        at, state = checkpoint
        if state is not None:
            # DALI refuses the training pipeline's checkpoint as it is (other operators):
            # only the reader's state moves over (pipeline.readerstate).
            try:
                return probe(graft_reader_state(state, probe().checkpoint(), READER)), at
            except (RuntimeError, ValueError, TypeError) as err:
                log.warning("the reader's checkpoint did not restore in the probe (%s): replaying from batch 0", err)
        return probe(), 0

    # -- patching the reader -----------------------------------------------------------
    def _patch(self, s: int, i: int) -> str:
        index = self.reader.index
        samples = read_index(index.idx[s])  # recovery alone needs the members as Python objects
        image = {e: (offset, size, name) for e, offset, size, name in samples[i]}[EXT_IMAGE]
        sub = {e: (offset, size) for e, offset, size, _ in samples[self.reader.nearest_good(s, i)]}[EXT_IMAGE]
        key = image[2].split(".", 1)[0]
        # Label bytes = the substitute JPEG's SOI marker: not ASCII, so it parses as DAMAGED.
        self.reader.patch(s, i, [(EXT_IMAGE, sub[0], sub[1], image[2]), (EXT_LABEL, sub[0], 2, f"{key}.{EXT_LABEL}")])
        name = f"{index.tars[s].name}:{key}"
        log.warning("damaged JPEG %s (shard %s, key %s): skipped", name, index.tars[s].name, image[2])
        return name


class SampleDecoder:
    """Whether each of a batch's encoded images decodes, with the loader's decoder on the
    loader's device ("mixed" on GPU `device_id`, as the training pipeline decodes).

    DALI fails a whole batch for one bad sample, so the images go through a batch-size-1
    pipeline fed by an external source, built once rather than once per image (a mixed
    decoder's build costs time and device memory; a batch has up to 128 images). A
    pipeline that rejected an image is replaced before the next: DALI 2.4's legacy
    executor fails every later run after one failure (which would brand good images as
    damaged), and nothing documents that the mixed decoder recovers on the dynamic one.
    Damage is rare, so that is one build per recovery and one per damaged image.
    """

    def __init__(self, device_id: int | None):
        self.device_id = device_id
        self.builds = 0
        self._pipe: Pipeline | None = None

    def pipeline(self) -> Pipeline:
        """The decoding pipeline, defined but not built."""
        gpu = self.device_id is not None
        pipe = Pipeline(batch_size=1, num_threads=1, device_id=self.device_id, prefetch_queue_depth=1)
        with pipe:
            enc = fn.external_source(name="enc", dtype=types.UINT8)
            pipe.set_outputs(fn.decoders.image(enc, device="mixed" if gpu else "cpu", output_type=types.RGB))
        return pipe

    def decodes(self, data: np.ndarray) -> bool:
        if self._pipe is None:
            self._pipe = self.pipeline()
            self._pipe.build()
            self.builds += 1
        self._pipe.feed_input("enc", [data])
        try:
            self._pipe.run()
        except RuntimeError:
            self._pipe = None
            return False
        return True
