"""A tiny prepared data set and a checkpoint trained to zero training error on it.

The shards are made by the real `preprocess demo-corpus` and `preprocess shard` (3 classes,
4 train + 3 val images each, at most 5 images per shard so that every split spans several
shards). The model is a width-reduced AlexNet trained in-process on the center patches of
the 12 training images, prepared as `trainer.analysis.inference` prepares them, until it classifies
every one of them correctly; it is saved with `trainer.run.ckptfile.write_checkpoint`.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from preprocess.cli import main as preprocess_main
from tests.evaluate.helpers import CLASSES, TRAIN_PER_CLASS, VAL_PER_CLASS, train_config, train_inputs, write_checkpoint


@pytest.fixture(autouse=True)
def _one_thread():
    """The models here are tiny: on a shared machine extra threads only contend."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tiny_shards(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("tiny")
    assert preprocess_main(["demo-corpus", "--out", str(root / "corpus"), "--classes", str(CLASSES),
                            "--train-per-class", str(TRAIN_PER_CLASS), "--val-per-class", str(VAL_PER_CLASS),
                            "--min-side", "256", "--max-side", "320"]) == 0
    assert preprocess_main(["shard", "--src", str(root / "corpus"), "--out", str(root / "shards"),
                            "--workers", "1", "--shard-max-count", "5", "--progress", "off"]) == 0
    return root / "shards"


@pytest.fixture(scope="session")
def trained_checkpoint(tiny_shards, tmp_path_factory) -> Path:
    from trainer.run.model import build_model

    run_dir = tmp_path_factory.mktemp("run")
    config = train_config(tiny_shards, run_dir)
    torch.manual_seed(0)
    model = build_model(config)
    x, y, _ = train_inputs(tiny_shards, config)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny convolutions: more threads only contend on a shared machine
    try:
        step = _fit(model, opt, x, y)
    finally:
        torch.set_num_threads(threads)
    return write_checkpoint(run_dir / "checkpoints" / "last.pt", model, config, step=step)


def _fit(model, opt, x, y) -> int:
    for step in range(300):
        model.train()
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 10 == 9:
            model.eval()
            with torch.no_grad():
                logits = model(x)
            # Zero error with a margin, so the JPEG round trip of `predict` cannot flip a rank.
            if (logits.argmax(1) == y).all() and logits.softmax(1).max(1).values.min() > 0.9:
                return step
    pytest.fail("the tiny model did not reach zero training error")
