"""Damaged JPEGs inside shards under DALI: find them, report shard and key, skip them.

Used by the DALI backend of `pipeline.make_loader` (`trainer train`/`evaluate`). DALI's
decoder fails the whole batch and cannot drop a sample (NVIDIA/DALI#3913), so when a
batch fails this module (1) replays the epoch's reader, without decoding, from the last
periodic checkpoint up to that batch and decodes its samples one by one, on the loader's
device, to find the bad ones; (2) writes a patched copy
of that shard's index in which the bad sample's JPEG points at a good sample of the same
shard and its label at bytes that are not a number, so the row comes out labelled
DAMAGED and the loader drops (train) or masks (eval) it, while sample counts, the
reader's order and DALI checkpoints stay valid; (3) rebuilds the pipeline from the last
periodic checkpoint and replays to the failed batch. Rare by construction:
`preprocess shard` re-encodes every image, so this is for disk or copy corruption.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import weakref
from pathlib import Path

import numpy as np
from nvidia.dali import fn, types
from nvidia.dali.pipeline import Pipeline

from pipeline.readerstate import graft_reader_state
from preprocess.contract import DataError, EXT_IMAGE

log = logging.getLogger(__name__)
CHECKPOINT_EVERY = 64  # batches between recovery checkpoints (one costs a few ms)
MAX_FAILURES_PER_BATCH = 8


class DaliRecovery:
    """Runs a loader's DALI pipeline batch by batch, recovering from damaged samples."""

    def __init__(self, loader):
        self.loader = loader
        self.index_paths = [str(s.idx) for s in loader.shards]  # by shard number
        self.pipe: Pipeline | None = None
        self._checkpoint: tuple[int, bytes | None] = (0, None)  # (batch, state before it)
        self._patch_dir: Path | None = None
        self._bad: dict[int, set[int]] = {}  # shard number -> damaged sample numbers

    def release(self) -> None:
        """Drop the pipeline before another is built. DALI frees a pipeline's decoder and
        buffers (GPU memory, on a GPU) only when the object dies, and the loader keeps no
        other reference: two at once, at an epoch start or a rebuild, may not fit."""
        pipe, self.pipe = self.pipe, None
        del pipe

    def start(self, plan, start: int, checkpoint: str | None) -> Pipeline:
        """Build the epoch's pipeline positioned before batch `start`."""
        self.release()
        self.pipe = self.loader.build(plan, checkpoint)
        self._checkpoint = (start if checkpoint is not None else 0, checkpoint)
        if checkpoint is None:
            for b in range(start):  # no DALI checkpoint: deterministic replay
                self.run(plan, b)
        return self.pipe

    def run(self, plan, b: int):
        """The outputs of batch `b`, replacing damaged samples as often as needed."""
        for _ in range(MAX_FAILURES_PER_BATCH):
            try:
                outs = self.pipe.run()
            except RuntimeError as err:
                self.release()  # it is rebuilt below; the probe's decoder needs the room
                found = self._locate(plan, b)
                if not found:
                    raise DataError(f"DALI failed on batch {b} of epoch {self.loader.epoch} "
                                    f"and no undecodable sample was found in it: {err}") from err
                self._patch(found)
                self._rebuild(plan, b)
                continue
            if (b + 1) % CHECKPOINT_EVERY == 0:
                self._checkpoint = (b + 1, self.pipe.checkpoint())
            return outs
        raise DataError(f"batch {b} kept failing after {MAX_FAILURES_PER_BATCH} repairs")

    def _rebuild(self, plan, b: int) -> None:
        at, checkpoint = self._checkpoint
        self.release()
        self.pipe = self.loader.build(plan, checkpoint)
        for _ in range(at, b):  # these batches decoded before; replay restores RNG states
            self.pipe.run()

    # -- finding the damaged samples ---------------------------------------------------
    def _locate(self, plan, b: int) -> list[tuple[int, int]]:
        """(shard number, sample number) of each sample of batch b that does not decode."""
        probe, first = self._probe(plan)
        for _ in range(first, b):
            probe.run()
        jpgs, infos = probe.run()
        decoder = self.decoder()
        found = [self._sample_of(bytes(np.array(info)).decode())
                 for data, info in zip(jpgs, infos) if not decoder.decodes(np.array(data))]
        log.info("batch %d of epoch %d failed: reader replayed from batch %d, %d samples decoded one by one "
                 "(%d decoder builds), %d damaged", b, self.loader.epoch, first, len(jpgs), decoder.builds,
                 len(found))
        return found

    def decoder(self) -> SampleDecoder:
        return SampleDecoder(self.loader.device_id)  # the loader's GPU, where it decodes

    def _probe(self, plan) -> tuple[Pipeline, int]:
        """A reading-only copy of the epoch's pipeline, and the batch it stands before: the
        last periodic checkpoint's, so that a failure late in an epoch does not replay the
        whole epoch; batch 0 where there is none yet (or DALI refuses the graft)."""
        from pipeline.dali import READER, reader_args

        cfg = self.loader.cfg

        def probe(checkpoint: bytes | None = None) -> Pipeline:
            pipe = Pipeline(batch_size=cfg.batch_size, num_threads=1, device_id=None,
                            enable_checkpointing=True, checkpoint=checkpoint)
            with pipe:
                jpg, _ = fn.readers.webdataset(**reader_args(self.loader, plan, self.index_paths))
                pipe.set_outputs(jpg, fn.get_property(jpg, key="source_info"))
            pipe.build()
            return pipe

        at, checkpoint = self._checkpoint
        if checkpoint is not None:
            # DALI refuses the training pipeline's checkpoint as it is (other operators):
            # only the reader's state moves over (pipeline.readerstate).
            try:
                return probe(graft_reader_state(checkpoint, probe().checkpoint(), READER)), at
            except (RuntimeError, ValueError, TypeError) as err:
                log.warning("the reader's checkpoint did not restore in the probe (%s): replaying from batch 0", err)
        return probe(), 0

    def _sample_of(self, source_info: str) -> tuple[int, int]:
        # source_info is "PATH.tar:OFFSET:KEY.jpg"
        path, _, member = source_info.rsplit(":", 2)
        for s, shard in enumerate(self.loader.shards):
            if str(shard.tar) == path:
                names = [line.split()[3] for line in shard.lines]
                return s, names.index(member)
        raise DataError(f"DALI reported a sample from an unknown file: {source_info}")

    # -- patching the index ------------------------------------------------------------
    def _patch(self, found: list[tuple[int, int]]) -> None:
        if self._patch_dir is None:
            self._patch_dir = Path(tempfile.mkdtemp(prefix="pipeline-idx-"))
            weakref.finalize(self, shutil.rmtree, self._patch_dir, True)
        for s, i in found:
            shard = self.loader.shards[s]
            _, _, member = shard.component(i, EXT_IMAGE)
            name = f"{shard.tar.name}:{member.split('.', 1)[0]}"
            log.warning("damaged JPEG %s (shard %s, key %s): skipped", name, shard.tar.name, member)
            if name not in self.loader.skipped:
                self.loader.skipped.append(name)
            self._bad.setdefault(s, set()).add(i)
        for s, bad in self._bad.items():
            self.index_paths[s] = str(self._write_index(s, bad))

    def _write_index(self, s: int, bad: set[int]) -> Path:
        shard = self.loader.shards[s]
        good = [i for i in range(shard.size) if i not in bad]
        if not good:
            raise DataError(f"every JPEG in {shard.tar} is damaged: re-run `preprocess shard`")
        lines = list(shard.lines)
        for i in bad:
            sub = min(good, key=lambda g: abs(g - i))
            offset, size, _ = shard.component(sub, EXT_IMAGE)
            member = shard.component(i, EXT_IMAGE)[2]
            key = member.split(".", 1)[0]
            # Label bytes = the substitute JPEG's SOI marker: not ASCII, so it parses as DAMAGED.
            lines[i] = f"{EXT_IMAGE} {offset} {size} {member} cls {offset} 2 {key}.cls"
        path = self._patch_dir / shard.idx.name
        path.write_text(f"v1.2 {len(lines)}\n" + "".join(line + "\n" for line in lines))
        return path


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
