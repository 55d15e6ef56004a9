"""`trainer evaluate` as the paper's Table 2: mixed architectures, starred pre-trained nets,
the plain nets' own ensemble beside the ensemble of all."""

from __future__ import annotations

import json

import torch

from tests.evaluate.helpers import train_config, write_checkpoint
from tests.evaluate.test_evaluate import _hand_top1_errors
from trainer.cli import main as trainer_main
from trainer.analysis.evaluate import table_ensembles
from trainer.run.model import build_model


def _checkpoint(tmp_path, data, name, seed, **fields):
    config = train_config(data, tmp_path / name, **{k: v for k, v in fields.items() if k != "init_from"})
    config["init_from"] = fields.get("init_from", "")
    torch.manual_seed(seed)
    model = build_model(config)
    with torch.no_grad():
        model.fc3.bias.copy_(torch.randn(3) * 3)  # untrained nets that disagree, so ensembles differ
    return write_checkpoint(tmp_path / f"{name}.pt", model, config), model


def test_table_ensembles():
    assert table_ensembles([False]) == [[0]]
    assert table_ensembles([False] * 5 + [True] * 2) == [[0, 1, 2, 3, 4], list(range(7))]
    assert table_ensembles([False, True]) == [[0, 1]]  # one plain net is no ensemble of its own


def test_mixed_architectures_print_table_2s_rows(tiny_shards, tmp_path, capsys):
    a, ma = _checkpoint(tmp_path, tiny_shards, "plain", 1)
    b, mb = _checkpoint(tmp_path, tiny_shards, "one-column", 2, groups=1)
    c, _ = _checkpoint(tmp_path, tiny_shards, "six", 3, extra_conv=True, init_from="pre/last.pt")
    out = tmp_path / "t2.json"
    args = ["evaluate", "--checkpoint", str(a), "--checkpoint", str(b), "--checkpoint", str(c),
            "--label", "A", "--label", "B", "--label", "C6", "--batch-size", "4", "--num-workers", "1",
            "--backend", "reference", "--device", "cpu", "--json", str(out)]
    assert trainer_main(args) == 0
    lines = capsys.readouterr().out.splitlines()[2:7]
    assert [line[:7].rstrip() for line in lines] == ["1 CNN", "1 CNN", "1 CNN*", "2 CNNs", "3 CNNs*"]
    assert lines[2].split()[2] == "C6"
    report = json.loads(out.read_text())
    assert [m["name"] for m in report["models"]] == ["1 CNN", "1 CNN", "1 CNN*"]
    assert [m["label"] for m in report["models"]] == ["A", "B", "C6"]
    assert [e["name"] for e in report["ensembles"]] == ["2 CNNs", "3 CNNs*"]
    plain = _hand_top1_errors([ma.eval(), mb.eval()], tiny_shards)
    for view, want in plain.items():
        assert abs(report["ensembles"][0][view]["top1_error"] - want) < 1e-9


def test_labels_must_match_the_checkpoints(tiny_shards, tmp_path, capsys):
    a, _ = _checkpoint(tmp_path, tiny_shards, "plain", 1)
    assert trainer_main(["evaluate", "--checkpoint", str(a), "--label", "x", "--label", "y"]) == 2
    assert "2 --label for 1 --checkpoint" in capsys.readouterr().out
