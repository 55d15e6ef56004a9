"""Issue 30, deliverable 2: one loader path for every command.

`--batch-size` means the global batch in `trainer train` and `trainer evaluate` alike (each
of 2 ranks loads half of it), and each command reads dataset.json once, passing it down to
its loaders and readers.
"""

from __future__ import annotations

import pytest
import torch

from preprocess.contract import Manifest
from trainer.analysis.inference import _mean, make_eval_loader
from trainer.cli import build_parser
from trainer.cli import main as trainer_main
from trainer.run.config import from_args
from trainer.run.distributed import World
from trainer.run.loaders import BatchError, train_loader_config


def _rank(r: int, n: int = 2) -> World:
    return World(rank=r, world_size=n, local_rank=r, device=torch.device("cpu"))


def _train_cfg(shards, tmp_path, batch: str):
    parser, _ = build_parser("train")
    return from_args(parser.parse_args(["--data", str(shards), "--run-dir", str(tmp_path / "run"),
                                        "--batch-size", batch]))


def _evaluate_args(checkpoint, batch: str):
    parser, _ = build_parser("evaluate")
    return parser.parse_args(["--checkpoint", str(checkpoint), "--batch-size", batch, "--backend", "reference"])


@pytest.mark.parametrize("batch", ["4", "6"])
def test_the_same_batch_size_is_the_same_global_batch_in_train_and_evaluate(tiny_shards, trained_checkpoint,
                                                                           tmp_path, batch):
    cfg = _train_cfg(tiny_shards, tmp_path, batch)
    args = _evaluate_args(trained_checkpoint, batch)
    manifest = Manifest.read(tiny_shards)
    train_global = sum(train_loader_config(cfg, _rank(r), "train", "train", False).batch_size for r in range(2))
    loaders = [make_eval_loader(tiny_shards, "val", _rank(r), args, {}, manifest) for r in range(2)]
    assert [loader.cfg.world_size for loader in loaders] == [2, 2]
    assert train_global == sum(loader.cfg.batch_size for loader in loaders) == int(batch)
    # The same worker rule too: 0 (the default of both) is the CPU budget's auto count.
    assert cfg.num_workers == args.num_workers == 0
    assert loaders[0].cfg.num_workers == train_loader_config(cfg, _rank(0), "train", "train", False).num_workers


def test_a_batch_that_does_not_divide_is_refused_alike(tiny_shards, trained_checkpoint, tmp_path):
    with pytest.raises(BatchError, match="--batch-size 5 is the global batch"):
        train_loader_config(_train_cfg(tiny_shards, tmp_path, "5"), _rank(0), "train", "train", False)
    with pytest.raises(BatchError, match="--batch-size 5 is the global batch"):
        make_eval_loader(tiny_shards, "val", _rank(0), _evaluate_args(trained_checkpoint, "5"), {},
                         Manifest.read(tiny_shards))


def test_workers_is_the_deprecated_name_of_num_workers(trained_checkpoint, capsys):
    parser, _ = build_parser("evaluate")
    assert parser.parse_args(["--checkpoint", str(trained_checkpoint), "--workers", "3"]).num_workers == 3
    assert "--workers is deprecated, use --num-workers" in capsys.readouterr().err


@pytest.fixture
def manifest_reads(monkeypatch):
    reads = []
    read = Manifest.read.__func__

    def counted(cls, data_dir):
        reads.append(str(data_dir))
        return read(cls, data_dir)

    monkeypatch.setattr(Manifest, "read", classmethod(counted))
    _mean.cache_clear()  # a mean image cached by another test would hide its read
    return reads


def _commands(shards, checkpoint, tmp_path):
    image = next(p for p in (shards.parent / "corpus").rglob("*") if p.suffix.lower() in (".jpeg", ".jpg", ".png"))
    cpu = ["--device", "cpu"]
    return {
        "train": ["train", "--data", str(shards), "--run-dir", str(tmp_path / "run"), *cpu, "--backend", "reference",
                  "--width", "0.0625", "--batch-size", "4", "--max-steps", "1", "--num-workers", "1"],
        "evaluate": ["evaluate", "--checkpoint", str(checkpoint), "--data", str(shards), *cpu, "--backend",
                     "reference", "--num-workers", "1", "--json", str(tmp_path / "e.json")],
        "predict": ["predict", "--checkpoint", str(checkpoint), "--data", str(shards), *cpu, str(image)],
        "neighbors": ["neighbors", "--checkpoint", str(checkpoint), "--data", str(shards), *cpu, "--num-workers",
                      "1", "--index", str(tmp_path / "index"), "-o", str(tmp_path / "n.png"), str(image)],
        "experiment": ["experiment", "relu-vs-tanh", "--data", str(shards), "-o", str(tmp_path / "x.png"),
                       "--lrs", "0.03", "--max-epochs", "1", "--batch-size", "4"],
    }


@pytest.mark.parametrize("command", ["train", "evaluate", "predict", "neighbors", "experiment"])
def test_each_command_reads_the_manifest_once(tiny_shards, trained_checkpoint, tmp_path, manifest_reads, command):
    argv = _commands(tiny_shards, trained_checkpoint, tmp_path)[command]
    assert trainer_main(argv) == 0
    assert len(manifest_reads) == 1, manifest_reads
