"""Figure 4 (left): `trainer predict`, and the one-line answers to bad input."""

from __future__ import annotations

import tarfile

import torch

from trainer.cli import main as trainer_main
from trainer.run.model import build_model

from tests.evaluate.helpers import CLASSES, train_config, write_checkpoint


def _extract_train_images(data, out):
    """The stored training JPEGs as files, with their labels."""
    out.mkdir(exist_ok=True)
    files = {}
    for shard in sorted(data.glob("train-*.tar")):
        with tarfile.open(shard) as tar:
            members = {m.name: m for m in tar}
            for name, member in members.items():
                if name.endswith(".jpg"):
                    key = name[: -len(".jpg")]
                    path = out / name
                    path.write_bytes(tar.extractfile(member).read())
                    files[path] = int(tar.extractfile(members[key + ".cls"]).read())
    return files


def _single_line(out: str) -> str:
    lines = [line for line in out.splitlines() if line.strip()]
    assert len(lines) == 1, out
    assert "Traceback" not in out
    return lines[0]


def test_true_class_ranks_first_for_training_images(tiny_shards, trained_checkpoint, tmp_path, capsys):
    files = _extract_train_images(tiny_shards, tmp_path / "imgs")
    assert len(files) == 12
    assert trainer_main(["predict", "--checkpoint", str(trained_checkpoint), "--json", *map(str, files)]) == 0
    import json

    results = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(results) == len(files)
    names = [c["name"] for c in sorted(json.loads((tiny_shards / "dataset.json").read_text())["classes"],
                                       key=lambda c: c["index"])]
    for r in results:
        label = files[type(next(iter(files)))(r["image"])]
        assert r["top5"][0]["index"] == label and r["top5"][0]["class"] == names[label]
        probs = [t["probability"] for t in r["top5"]]
        assert probs == sorted(probs, reverse=True) and len(probs) == CLASSES  # fewer than 5 classes
        assert abs(sum(probs) - 1) < 1e-4


def test_undecodable_image_is_one_line_and_others_still_ranked(tiny_shards, trained_checkpoint, tmp_path, capsys):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 this is not a JPEG")
    good = next(iter(_extract_train_images(tiny_shards, tmp_path / "imgs")))
    assert trainer_main(["predict", "--checkpoint", str(trained_checkpoint), str(bad), str(good)]) == 1
    out = capsys.readouterr().out
    assert out.count("Traceback") == 0
    bad_lines = [line for line in out.splitlines() if "broken.jpg" in line]
    assert len(bad_lines) == 1 and "cannot be used as an image" in bad_lines[0]
    assert str(good) in out  # the good image was still ranked


def test_checkpoint_of_another_architecture(tiny_shards, tmp_path, capsys):
    # Weights of a one-column net under a config that names the two-column one.
    config = train_config(tiny_shards, tmp_path)
    weights = build_model({**config, "groups": 1})
    path = write_checkpoint(tmp_path / "other.pt", weights, config)
    assert trainer_main(["predict", "--checkpoint", str(path), str(tmp_path / "x.jpg")]) == 2
    line = _single_line(capsys.readouterr().out)
    assert "another architecture" in line and "conv2.weight" in line


def test_checkpoint_of_another_class_count(tiny_shards, tmp_path, capsys):
    config = {**train_config(tiny_shards, tmp_path), "num_classes": 7}
    path = write_checkpoint(tmp_path / "seven.pt", build_model(config), config)
    assert trainer_main(["evaluate", "--checkpoint", str(path), "--json", str(tmp_path / "e.json")]) == 2
    line = _single_line(capsys.readouterr().out)
    assert "classifies 7 classes" in line and "lists 3" in line


def test_not_a_checkpoint(tmp_path, capsys):
    path = tmp_path / "model.pt"
    torch.save({"state_dict": {}}, path)
    assert trainer_main(["filters", "--checkpoint", str(path)]) == 2
    assert "not a trainer checkpoint" in _single_line(capsys.readouterr().out)
    path.write_bytes(b"garbage")
    assert trainer_main(["filters", "--checkpoint", str(path)]) == 4  # exitcodes.CORRUPT
    assert "cannot be read as a checkpoint" in _single_line(capsys.readouterr().out)
