"""The reference loader's workers persist across epochs: every sample once per epoch on
every rank count, resume mid-epoch unchanged, nothing from an abandoned epoch leaks."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from synthetic_shards import make_dataset

from pipeline import make_loader

SIZES = [40, 37, 43]  # 120 samples: 1, 2 and 3 ranks take batches of 4 with nothing dropped
N = sum(SIZES)


@pytest.fixture(scope="module")
def even_dir(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("even"), SIZES, [8], seed=11)


def worker_pids(loader) -> list[int]:
    return [w.pid for w in loader.data_loader()._iterator._workers]


@pytest.mark.parametrize("world_size", [1, 2, 3])
def test_every_sample_once_per_epoch_with_persistent_workers(even_dir, world_size):
    loaders = [make_loader(even_dir, backend="reference", batch_size=4, rank=r, world_size=world_size,
                           num_workers=2, seed=3) for r in range(world_size)]  # fmt: skip
    pids, orders = None, []
    for epoch in range(3):
        seen = []
        for loader in loaders:
            loader.set_epoch(epoch)
            seen += [n for _, y in loader for n in y.tolist()]
        assert sorted(seen) == list(range(N)), f"epoch {epoch}"
        orders.append(seen)
        now = [worker_pids(loader) for loader in loaders]
        assert pids is None or now == pids, "workers were restarted between epochs"
        pids = now
    assert orders[0] != orders[1] != orders[2]


def test_resume_mid_epoch_on_live_workers(even_dir):
    """A loader whose workers are mid-epoch (batches prefetched) loads a state and continues
    exactly where the state says; then an abandoned epoch leaves nothing in the next one."""
    kw = dict(backend="reference", batch_size=4, num_workers=2, seed=5)
    full = make_loader(even_dir, **kw)
    full.set_epoch(1)
    want = [(x.clone(), y.clone()) for x, y in full]
    full.set_epoch(2)
    want_next = [y.tolist() for _, y in full]

    loader = make_loader(even_dir, **kw)
    loader.set_epoch(1)
    it = iter(loader)
    got = [next(it) for _ in range(6)]
    state = loader.state_dict()
    for _ in range(3):  # run on past the state: these batches must come again
        next(it)
    loader.load_state_dict(state)
    loader.set_epoch(1)
    got += list(loader)
    assert [y.tolist() for _, y in got] == [y.tolist() for _, y in want]
    assert all(torch.equal(a, b) for (a, _), (b, _) in zip(got, want))
    loader.set_epoch(2)
    it = iter(loader)
    next(it)  # abandon epoch 2 after one batch, with more prefetched
    loader.set_epoch(2)
    assert [y.tolist() for _, y in loader] == want_next


def _frozen_objects(queue) -> None:
    import gc

    queue.put(gc.get_freeze_count())


def test_workers_never_collect_what_the_forkserver_preloaded():
    """Inherited objects sit in the permanent generation: a worker's collections do not write
    to (and so copy) the forkserver's pages (pipeline/forkserver_freeze.py)."""
    from pipeline.reference import worker_context

    ctx = worker_context()
    queue = ctx.Queue()
    child = ctx.Process(target=_frozen_objects, args=(queue,))
    child.start()
    frozen = queue.get(timeout=60)
    child.join()
    assert frozen > 50_000  # torch alone leaves some 100,000 objects


_RANK = """
import sys
from pipeline import make_loader
if __name__ == "__main__":
    loader = make_loader(sys.argv[1], backend="reference", batch_size=4, num_workers=2)
    it = iter(loader)
    next(it)
    workers = [w.pid for w in loader.data_loader()._iterator._workers]
    print(" ".join(map(str, workers)), flush=True)
    sys.stdin.read()
"""


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][0] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_workers_and_forkserver_die_with_a_killed_rank(even_dir, tmp_path):
    """SIGKILL of the rank (an OOM kill, say) leaves no worker or forkserver behind."""
    script = tmp_path / "rank.py"
    script.write_text(_RANK)
    rank = subprocess.Popen([sys.executable, str(script), str(even_dir)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                            cwd=Path(__file__).resolve().parents[2])
    workers = [int(p) for p in rank.stdout.readline().split()]
    forkservers = {int(open(f"/proc/{w}/stat").read().split(") ", 1)[1].split()[1]) for w in workers}
    assert len(workers) == 2 and all(map(_alive, workers))
    rank.kill()
    rank.wait()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and any(map(_alive, workers + sorted(forkservers))):
        time.sleep(0.1)
    assert not any(map(_alive, workers + sorted(forkservers))), "a worker or the forkserver outlived the rank"
