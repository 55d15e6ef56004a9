"""Batches made ahead on a thread of their own, so that the trainer's `next()` only takes one.

Used by the DALI backend (`pipeline/dali.py`): its producer runs the pipeline (DALI calls
the batch source, `pipeline.dalisource`, in that thread), parses the labels, draws the
parameters and copies the batch to its device, while the trainer's thread runs the step.
The thread is the loader's for one pass over an epoch: `close()` (called when the pass
ends, is broken off, or its generator is collected) stops it and waits for it, so it
never outlives the pass and never touches the pipeline while the rank does. An error in
the producer is raised in the consumer's `next()`, at the batch it broke.
"""

from __future__ import annotations

import atexit
import queue
import threading
import weakref

import torch

THREAD_NAME = "pipeline-prefetch"
_DONE = object()
_LIVE: weakref.WeakSet = weakref.WeakSet()  # producers running, stopped at exit


@atexit.register
def _close_all() -> None:
    # A pass left open when the process exits (an exception in the training loop keeps its
    # generator alive in the traceback) must not have its thread inside DALI while the
    # interpreter tears down: stop and join it first.
    for feed in list(_LIVE):
        feed.close()


class Prefetch:
    """`make(b)` for b in `batches`, `depth` of them ahead, in a thread. Iterate for the
    results in order; `close()` (idempotent) ends the thread. `depth` 0: no thread, each
    result made in `next()` itself (the loader's behaviour before the thread)."""

    def __init__(self, make, batches: range, depth: int, device: torch.device | None = None):
        self.make, self.batches, self.depth = make, batches, depth
        self._stop = threading.Event()
        self._queue: queue.Queue = queue.Queue(maxsize=max(depth, 1))
        self._thread = None
        if depth > 0:
            # The consumer's CUDA device and stream, so that the producer's copies are ordered
            # before the work the consumer queues on that stream after taking the batch.
            stream = torch.cuda.current_stream(device) if device is not None and device.type == "cuda" else None
            self._thread = threading.Thread(target=self._run, args=(device, stream), name=THREAD_NAME, daemon=True)
            self._thread.start()
            _LIVE.add(self)

    def _put(self, item) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _run(self, device, stream) -> None:
        try:
            if stream is not None:
                torch.cuda.set_device(device)
                torch.cuda.set_stream(stream)
            for b in self.batches:
                if self._stop.is_set() or not self._put((b, self.make(b))):
                    return
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, raised there
            self._put(exc)
            return
        self._put(_DONE)

    def __iter__(self):
        if self._thread is None:
            for b in self.batches:
                yield b, self.make(b)
            return
        while True:
            item = self._queue.get()
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield item

    def close(self) -> None:
        """Stop the producer after the batch it is making, and wait for it."""
        self._stop.set()
        thread, self._thread = self._thread, None
        _LIVE.discard(self)
        if thread is None:
            return
        while thread.is_alive():
            try:  # make room, so that a producer blocked on a full queue sees the stop
                while True:
                    self._queue.get_nowait()
            except queue.Empty:
                pass
            thread.join(timeout=0.1)
