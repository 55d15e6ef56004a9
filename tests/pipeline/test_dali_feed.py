"""The DALI backend's feed off the trainer's thread (issue 25): its batch source runs in the
loader's producer thread, which yields the same batches, labels and parameters as making
each batch in `next()`, ends with the pass however it ends, and raises its errors in
`next()`; the batch source's label parse is `parse_label`'s, field for field.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

import pipeline.dali as dali
from pipeline import make_loader, prefetch
from pipeline.base import DAMAGED, parse_label
from pipeline.dalisource import LABEL_WIDTH, BatchSource, parse_labels

FIELDS = [b"0", b"7", b"42", b"007", b"999", b"1000", b"12345678", b"123456789", b"", b" 5", b"5 ", b"+5", b"-1",
          b"1_0", b"4a", b"\xff\xd8", b"\x00", b"5\n", b"\xd9\xa3", b"99999", b"1e3", b"  "]


def producer_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == prefetch.THREAD_NAME]


@pytest.mark.parametrize("classes", [None, 1000])
def test_parse_labels_is_parse_label_field_for_field(classes):
    rng = np.random.default_rng(0)
    fields = FIELDS + [bytes(rng.integers(0, 256, rng.integers(0, 11)).tolist()) for _ in range(300)]
    fields += [str(n).encode() for n in rng.integers(0, 30000, 300)]
    heads = np.zeros((len(fields), LABEL_WIDTH), np.uint8)
    for j, f in enumerate(fields):
        heads[j, : min(len(f), LABEL_WIDTH)] = np.frombuffer(f[:LABEL_WIDTH], np.uint8)
    sizes = np.array([len(f) for f in fields], np.int64)
    got = parse_labels(heads, sizes, lambda j: fields[j], classes)
    want = [parse_label(np.frombuffer(f, np.uint8), classes) for f in fields]
    assert got.tolist() == want
    assert DAMAGED in want and max(want) > 0  # both kinds were there to tell apart


def one_pass(loader, stop=None):
    out = []
    for i, (images, labels) in enumerate(loader):
        out.append((images.clone(), labels.clone(), {k: v.copy() for k, v in loader.last_params.items()}))
        if stop is not None and i + 1 == stop:
            break
    return out


def passes(shard_dir, depth, monkeypatch):
    """Epoch 0 broken off after 2 batches, epoch 0 again whole, epoch 1 whole, then a
    resume at epoch 1's batch 3: every batch with its parameters."""
    monkeypatch.setattr(dali, "PREFETCH_BATCHES", depth)
    loader = make_loader(shard_dir, backend="dali", batch_size=8, num_workers=2, seed=5)
    got = one_pass(loader, stop=2) + one_pass(loader)
    loader.set_epoch(1)
    got += one_pass(loader)
    state = {**loader.state_dict(), "batch": 3}
    resumed = make_loader(shard_dir, backend="dali", batch_size=8, num_workers=2, seed=5)
    resumed.load_state_dict(state)
    got += one_pass(resumed)
    loader.close()
    resumed.close()
    return got


def test_the_threaded_loader_yields_the_batches_of_the_unthreaded_one(shard_dir, monkeypatch):
    threaded, inline = passes(shard_dir, 1, monkeypatch), passes(shard_dir, 0, monkeypatch)
    assert len(threaded) == len(inline) > 10
    for (a, la, pa), (b, lb, pb) in zip(threaded, inline):
        assert torch.equal(a, b) and torch.equal(la, lb)
        assert pa.keys() == pb.keys() and all(np.array_equal(pa[k], pb[k]) for k in pa)


def test_the_source_runs_off_the_consumers_thread_and_the_thread_ends_with_the_pass(shard_dir, monkeypatch):
    callers = set()
    call = BatchSource.__call__

    def recording(self, info):
        callers.add(threading.current_thread().name)
        return call(self, info)

    monkeypatch.setattr(BatchSource, "__call__", recording)
    loader = make_loader(shard_dir, backend="dali", batch_size=8, num_workers=2)
    assert len(one_pass(loader)) == len(loader)
    assert callers == {prefetch.THREAD_NAME}  # the gather never ran in the consumer's thread
    assert not producer_threads()  # a pass read to its end
    it = iter(loader)
    next(it)
    assert len(producer_threads()) == 1
    del it  # a pass dropped mid-epoch (the generator collected)
    assert not producer_threads()
    it = iter(loader)
    next(it)
    it2 = iter(loader)  # a second pass while the first is still open takes the pipeline over
    next(it2)
    assert len(producer_threads()) == 1
    loader.close()  # and close() ends whichever pass is open
    assert not producer_threads()


def test_an_error_in_the_producer_is_raised_in_next_at_its_batch(shard_dir, monkeypatch):
    loader = make_loader(shard_dir, backend="dali", batch_size=8, num_workers=2)
    make = dali.DaliLoader._batch

    def failing(self, outs, plan, b):
        if b == 2:
            raise OSError("disk gone at batch 2")
        return make(self, outs, plan, b)

    monkeypatch.setattr(dali.DaliLoader, "_batch", failing)
    it = iter(loader)
    next(it), next(it)
    with pytest.raises(OSError, match="disk gone at batch 2"):
        next(it)
    assert not producer_threads()
    monkeypatch.setattr(dali.DaliLoader, "_batch", make)
    assert len(one_pass(loader)) == len(loader)  # the loader goes on: a new pass reads the epoch
    loader.close()


def test_a_shard_cut_short_after_indexing_loses_its_tail_samples_not_the_run(tmp_path):
    """The batch source reads a shard's bytes with `preadv`: a shard shorter than its index
    says (a copy cut off) gives its missing samples' JPEGs as they are (empty), which the
    decoder refuses, so they are reported and masked like any damaged JPEG, and their
    labels are not read as class numbers."""
    from synthetic_shards import TRAIN_SIZES, write_split, write_stats

    images = write_split(tmp_path, "train", TRAIN_SIZES, seed=3)
    write_stats(tmp_path, images)
    loader = make_loader(tmp_path, backend="dali", batch_size=8, num_workers=2, seed=5)
    total = sum(len(labels) for _, labels in loader)
    last = loader.index.tars[-1]
    table, start = loader.index.table, int(loader.index.starts[len(loader.index.tars) - 1])
    cut = int(table[start + 2, 0]) + 100  # inside the third sample's JPEG: it and all after it are gone
    with open(last, "r+b") as f:
        f.truncate(cut)
    cut_loader = make_loader(tmp_path, backend="dali", batch_size=8, num_workers=2, seed=5)
    labels = torch.cat([y for _, y in cut_loader])
    # The epoch reads most of the shard's samples (the rank's last partial batch is left out).
    assert len(cut_loader.skipped) >= (len(table) - start - 2) // 2
    assert all(name.startswith((last.name + ":", last.name + "@")) for name in cut_loader.skipped)
    # Their rows keep their place, masked (label DAMAGED): the batch's shape never changes.
    assert len(labels) == total and int((labels < 0).sum()) == len(cut_loader.skipped)
    cut_loader.close()
    loader.close()


def test_a_pass_left_open_at_exit_is_stopped_before_the_interpreter_goes(shard_dir):
    """An exception in a training loop keeps its pass's generator alive in the traceback:
    the process must still exit cleanly, its producer stopped first (pipeline.prefetch's
    atexit hook), not left inside DALI while the interpreter tears down."""
    import subprocess
    import sys

    script = (f"from pipeline import make_loader\n"
              f"loader = make_loader({str(shard_dir)!r}, backend='dali', batch_size=8, num_workers=2)\n"
              f"it = iter(loader)\nnext(it)\nraise SystemExit(3)\n")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                          cwd=str(__import__("pathlib").Path(__file__).resolve().parents[2]))
    assert proc.returncode == 3, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr and "Fatal" not in proc.stderr, proc.stderr[-2000:]
