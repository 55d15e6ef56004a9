"""The ablation switches of sections 3 and 4: flags of `trainer train`, in the model, and in
the config the run store keeps (which the progress page shows)."""

from __future__ import annotations

import json

import pytest
import torch

from trainer.cli import build_parser
from trainer.cli import main as trainer_main
from trainer.run.config import from_args
from trainer.run.model import build_model

SWITCHES = ["--groups", "1", "--no-lrn", "--no-overlap-pool", "--dropout", "0", "--activation", "tanh",
            "--lighting-std", "0", "--mean", "channel"]
RECORDED = {"groups": 1, "lrn": False, "overlap_pool": False, "dropout": 0.0, "activation": "tanh",
            "lighting_std": 0.0, "mean": "channel"}


def test_switches_parse_into_the_config_and_the_model(tmp_path):
    parser, _ = build_parser("train")
    config = from_args(parser.parse_args(["--data", "d", "--run-dir", str(tmp_path), *SWITCHES])).to_dict()
    assert {k: config[k] for k in RECORDED} == RECORDED
    model = build_model({**config, "num_classes": 10, "width": 0.25})
    assert model.conv2.groups == model.conv4.groups == model.conv5.groups == 1
    assert isinstance(model.norm1, torch.nn.Identity) and isinstance(model.act, torch.nn.Tanh)
    assert model.pool.kernel_size == 2 and model.pool.stride == 2 and model.dropout.p == 0.0
    paper = from_args(parser.parse_args(["--data", "d", "--run-dir", str(tmp_path)])).to_dict()
    assert {k: paper[k] for k in RECORDED} == {"groups": 2, "lrn": True, "overlap_pool": True, "dropout": 0.5,
                                               "activation": "relu", "lighting_std": 0.1, "mean": "image"}


@pytest.mark.slow
def test_a_trained_ablation_run_records_its_switches(tiny_shards, tmp_path, capsys):
    """`trainer train` with every switch flipped: run store config, filters.png, evaluate."""
    from trainer.runstore import RunStore

    run_dir = tmp_path / "runs" / "ablated"
    assert trainer_main(["train", "--data", str(tiny_shards), "--run-dir", str(run_dir), "--device", "cpu",
                         "--backend", "reference", "--width", "0.0625", "--batch-size", "4", "--epochs", "1",
                         "--num-workers", "1", "--no-tencrop", "--log-every", "1", *SWITCHES]) == 0
    store = RunStore(tmp_path / "runs" / "runs.db")
    try:
        run = store.get_run_by_name("ablated")
    finally:
        store.close()
    assert {k: run["config"][k] for k in RECORDED} == RECORDED
    # The trainer drew Figure 3 with this module: one block, as groups=1 has one column.
    assert (run_dir / "filters.png").is_file()
    capsys.readouterr()
    out = tmp_path / "e.json"
    assert trainer_main(["evaluate", "--checkpoint", str(run_dir / "checkpoints" / "last.pt"),
                         "--backend", "reference", "--num-workers", "1", "--json", str(out)]) == 0
    assert json.loads(out.read_text())["count"] == 9


def _fraction_off_whole_levels(images: torch.Tensor, mean_rgb) -> float:
    """Largest distance from an integer of (batch + per-channel mean): 0 when the batch is
    uint8 pixels minus the per-channel mean and nothing else."""
    x = images.double() + torch.as_tensor(mean_rgb, dtype=torch.float64).view(1, 3, 1, 1)
    return float((x - x.round()).abs().max())


@pytest.mark.parametrize("flags, train_whole, val_whole", [
    (["--mean", "channel", "--lighting-std", "0"], True, True),
    (["--mean", "channel"], False, True),  # lighting offsets are fractions of a level
    (["--lighting-std", "0"], False, False),  # the mean image is fractional per pixel
])
def test_the_trainers_loaders_use_the_mean_and_lighting_switches(tiny_shards, tmp_path, flags, train_whole,
                                                                 val_whole):
    """What the trainer feeds the net, not what it records: with --mean channel and
    --lighting-std 0 a batch is whole pixel levels minus the per-channel mean."""
    from preprocess.contract import load_stats
    from trainer.run.distributed import setup
    from trainer.run.train import Trainer, check_inputs

    parser, _ = build_parser("train")
    cfg = from_args(parser.parse_args(["--data", str(tiny_shards), "--run-dir", str(tmp_path / "run"),
                                       "--device", "cpu", "--backend", "reference", "--width", "0.0625",
                                       "--batch-size", "4", "--num-workers", "1", *flags]))
    trainer = Trainer(check_inputs(cfg), setup("cpu"))
    try:
        mean_rgb = load_stats(tiny_shards).mean_rgb
        train_images, _ = next(iter(trainer.train_loader))
        val_images = next(iter(trainer.make_loader("val", "center")))[0]
    finally:
        trainer.session.finish("stopped")
    for images, whole in ((train_images, train_whole), (val_images, val_whole)):
        off = _fraction_off_whole_levels(images, mean_rgb)
        assert off < 1e-3 if whole else off > 0.1, (flags, off)
