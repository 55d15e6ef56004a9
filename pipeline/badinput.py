"""Damaged JPEGs inside shards under DALI: find them, report shard and key, skip them.

Used by the DALI backend of `pipeline.make_loader` (`trainer train`/`evaluate`). DALI's
decoder fails the whole batch and cannot drop a sample (NVIDIA/DALI#3913). The loader
(`pipeline/dali.py`) knows which samples the failed batch held (its epoch schedule), so
it drops its pipeline and `DaliRecovery` decodes those samples one by one, on the
loader's device, to find the bad ones. The loader then adds them to its source's damaged
set (`pipeline.dalisource`: a blank JPEG and a label that is not a number, so the row is
masked) and rebuilds its pipeline at that batch. A JPEG that does not end in its
end-of-image marker is damaged too, even where a decoder given its exact bytes copes:
the batch source reads a batch as one dense array and clears such a row, since the bytes
after it could complete a cut JPEG (`SampleBytes.batch_into`). Rare by
construction: `preprocess shard` re-encodes every image, so this is for disk or copy
corruption. Recovery gets plain arguments (the rank's sample reader, the device), not
the loader.
"""

from __future__ import annotations

import logging

import numpy as np
from nvidia.dali import fn, types
from nvidia.dali.pipeline import Pipeline

from pipeline.samplebytes import EOI, SampleBytes
from preprocess.contract import DataError

log = logging.getLogger(__name__)
MAX_FAILURES_PER_BATCH = 8


class DaliRecovery:
    """Finds the damaged samples of a failed batch."""

    def __init__(self, samples: SampleBytes, device_id: int | None):
        self.samples, self.device_id = samples, device_id

    def repair(self, ids: np.ndarray, known: set[int], epoch: int, b: int, err) -> list[tuple[int, str]]:
        """(global number, "shard:key") of each sample of the failed batch `ids` that does
        not decode (the `known` damaged ones are already replaced, and skipped)."""
        decoder = self.decoder()
        candidates = [g for g in dict.fromkeys(int(g) for g in ids) if g not in known]
        found = [(g, self.samples.name(g), why) for g in candidates if (why := self.fault(g, decoder))]
        log.info("batch %d of epoch %d failed: %d samples decoded one by one (%d decoder builds), %d damaged",
                 b, epoch, len(candidates), decoder.builds, len(found))
        if not found:
            raise DataError(f"DALI failed on batch {b} of epoch {epoch} "
                            f"and no undecodable sample was found in it: {err}") from err
        for g, name, why in found:
            log.warning("damaged sample %s (%s): skipped", name, self.samples.damage(g, why))
        return [(g, name) for g, name, _ in found]

    def fault(self, g: int, decoder: SampleDecoder) -> str | None:
        """Why sample g cannot go through the batch source, or None."""
        data = self.samples.jpeg_bytes(g)
        if not data.endswith(EOI):
            return (f"JPEG does not end in its end-of-image marker (FF D9): cut short, or "
                    f"{len(data)} bytes with more after the image")
        return None if decoder.decodes(np.frombuffer(data, np.uint8)) else "JPEG does not decode"

    def decoder(self) -> SampleDecoder:
        return SampleDecoder(self.device_id)  # the loader's GPU, where it decodes


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
