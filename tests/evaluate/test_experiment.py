"""Figure 1: `trainer experiment relu-vs-tanh`."""

from __future__ import annotations

import json

import torch
from PIL import Image

from trainer.cli import main as trainer_main
from trainer.analysis.experiment import epochs_to, four_layer_cnn, shrunk_split


def test_four_layer_net_differs_only_in_its_units():
    relu, tanh = four_layer_cnn("relu", 10), four_layer_cnn("tanh", 10)
    learned = [m for m in relu if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    assert len(learned) == 4  # three convolutional layers and one fully-connected
    assert [type(m) for m in relu if not isinstance(m, torch.nn.ReLU)] == \
        [type(m) for m in tanh if not isinstance(m, torch.nn.Tanh)]
    assert relu(torch.zeros(2, 3, 32, 32)).shape == (2, 10)


def test_epochs_to_target():
    assert epochs_to([0.8, 0.5, 0.25, 0.1]) == 3
    assert epochs_to([0.8, 0.5]) is None


def test_relu_vs_tanh_writes_plot_and_curves(tiny_shards, tmp_path, capsys):
    x, y = shrunk_split(tiny_shards, "train", 32, None)
    assert x.shape == (12, 3, 32, 32) and x.dtype == torch.uint8 and sorted(y.tolist()) == [0] * 4 + [1] * 4 + [2] * 4
    png = tmp_path / "fig1.png"
    assert trainer_main(["experiment", "relu-vs-tanh", "--data", str(tiny_shards), "-o", str(png),
                         "--lrs", "0.01,0.03", "--max-epochs", "6", "--batch-size", "4"]) == 0
    out = capsys.readouterr().out
    assert "relu:" in out and "tanh:" in out
    assert Image.open(png).size[0] > 300
    summary = json.loads(png.with_suffix(".json").read_text())
    assert summary["images"] == 12 and summary["target_error"] == 0.25
    for activation in ("relu", "tanh"):
        r = summary["results"][activation]
        assert r["lr"] in (0.01, 0.03) and 1 <= len(r["curve"]) <= 6
        assert all(0.0 <= e <= 1.0 for e in r["curve"])
        # Training stops at the first epoch at or below 25%, and that epoch is the one reported.
        assert r["epochs_to_target"] == epochs_to(r["curve"])
        if r["epochs_to_target"]:
            assert r["epochs_to_target"] == len(r["curve"])


def test_missing_data_is_one_line(tmp_path, capsys):
    assert trainer_main(["experiment", "relu-vs-tanh", "--data", str(tmp_path)]) == 2
    out = capsys.readouterr().out.strip()
    assert len(out.splitlines()) == 1 and "dataset.json" in out
