"""A real uvicorn serving `create_app(settings)` on a loopback port, and a run-store writer
standing in for the trainer where a test needs exact control of the run's state."""

from __future__ import annotations

import contextlib
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import uvicorn

from trainer import runstore
from trainer.runstore import RunProgress, RunStore
from trainer.server.app import create_app
from trainer.server.protocol import uvicorn_options
from trainer.server.settings import ServerSettings

TOKEN = "test-operator-token-0123456789abcdef"


@dataclass
class Live:
    url: str
    db: Path
    store: RunStore  # the test's own handle on the same SQLite file

    def client(self, **kw) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=30, **kw)


@contextlib.contextmanager
def serving(db: Path, **settings):
    config = ServerSettings(runs_db=db, token=settings.pop("token", TOKEN), **settings)
    app = create_app(config)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning",
                                           **uvicorn_options(config)))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    store = RunStore(db)
    try:
        yield Live(f"http://127.0.0.1:{port}", db, store)
    finally:
        server.should_exit = True
        thread.join(20)
        store.close()


def make_run(store: RunStore, name: str = "run-a", *, lr: float = 0.01, steps: int = 0, every: int = 1,
             status: str = "running", run_dir: str = "", epochs: int = 90, spe: int = 100) -> int:
    """A run with `steps` steps of loss/LR/throughput rows (one per `every` steps) and one
    validation row per epoch, as the trainer writes them."""
    rid, _ = store.start_run(name, {"run_dir": run_dir, "epochs": epochs, "lr": lr}, lr=lr)
    for step in range(every, steps + 1, every):
        store.log_metrics(rid, step, step / spe, {
            runstore.LOSS: 7.0 - step * 1e-4, runstore.LR: lr, runstore.IMAGES_PER_SEC: 500.0,
            runstore.DATA_WAIT: 0.05, runstore.IMAGES_SEEN: step * 128})
        if step % spe == 0:
            store.log_metrics(rid, step, step / spe, {runstore.VAL_TOP1: 0.9 - step * 1e-5,
                                                     runstore.VAL_TOP5: 0.7 - step * 1e-5})
    store.flush()
    store.update_progress(rid, epoch=steps / spe, step=steps, lr=lr, progress=RunProgress(
        epochs=epochs, steps_per_epoch=spe, images_per_sec=500.0, data_wait_frac=0.05, eta_s=3600.0,
        images_seen=steps * 128, batch_size=128, world_size=1, demo=True))
    if status != "running":
        store.set_status(rid, status)
    return rid


def auth(token: str = TOKEN) -> dict:
    return {"Authorization": f"Bearer {token}"}
