"""`SampleBytes.batch_into`: a batch as one dense array a row a sample, as DALI's CPU
decoder reads it (`pipeline.dali.read_nodes`): each row the sample's exact JPEG, then
zeros; a row whose JPEG does not end in its end marker cleared; label fields as read
one by one; whatever an earlier batch left in the reused buffer."""

from __future__ import annotations

import numpy as np
from synthetic_shards import jpeg_bytes, synthetic_image, write_split, write_stats

from pipeline import make_loader
from pipeline.base import parse_label
from pipeline.dalisource import LABEL_WIDTH, blank_jpeg, parse_labels
from pipeline.samplebytes import TAIL

GOOD = jpeg_bytes(synthetic_image(np.random.default_rng(9)))
CUT = GOOD[: len(GOOD) // 3]  # a JPEG cut off: a decoder fails it only where its buffer ends


def test_rows_hold_each_jpeg_exactly_then_zeros_and_a_cut_jpeg_is_cleared(tmp_path):
    images = write_split(tmp_path, "train", [12, 12], seed=4, damaged={3: CUT})
    write_stats(tmp_path, images)
    loader = make_loader(tmp_path, backend="dali", batch_size=8, num_workers=1)
    samples = loader.samples
    blank = np.frombuffer(blank_jpeg(), np.uint8)
    rng = np.random.default_rng(0)
    buffer = None
    for _ in range(4):  # the buffer is reused: an earlier batch's bytes must not show
        ids = rng.permutation(24)[:12]
        bad = ids == 7
        rows, lengths, fields, sizes, buffer = samples.batch_into(ids, buffer, LABEL_WIDTH, bad, blank)
        assert rows.shape[0] == len(ids)
        for i, g in enumerate(ids.tolist()):
            row = rows[i]
            if g == 3:
                assert not row.any()  # cleared: the batch fails, recovery decodes the exact bytes
                continue
            want = blank.tobytes() if g == 7 else samples.jpeg_bytes(g)
            assert lengths[i] == len(want) and row[: lengths[i]].tobytes() == want
            assert not row[lengths[i] : lengths[i] + TAIL].any()
        labels = parse_labels(fields, sizes, lambda j: samples.label_bytes(int(ids[j])), None)
        assert labels.tolist() == [parse_label(np.frombuffer(samples.label_bytes(int(g)), np.uint8), None)
                                   for g in ids]  # fmt: skip
    loader.close()


def test_a_jpeg_with_bytes_after_its_end_marker_is_reported_and_masked_not_fatal(tmp_path, caplog):
    """Shards from other tools may hold a JPEG with bytes after its end marker: its exact
    bytes decode, but its row is cleared like a cut one's, so recovery must name it (not
    stop the run for a batch in which nothing fails to decode)."""
    import logging

    trailing = GOOD + b"\x00trailer"
    images = write_split(tmp_path, "train", [12, 12], seed=4, damaged={5: trailing})
    write_stats(tmp_path, images)
    caplog.set_level(logging.WARNING)
    loader = make_loader(tmp_path, mode="center", backend="dali", batch_size=8, num_workers=1)
    valid = sum(int(v.sum()) for _, _, v in loader)
    assert valid == loader.num_samples - 1
    assert len(loader.skipped) == 1
    assert "end-of-image marker" in caplog.text
    loader.close()
