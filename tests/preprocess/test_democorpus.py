"""preprocess.democorpus: ImageNet layout, distinct classes, deterministic for a seed."""

from __future__ import annotations

import numpy as np
from PIL import Image

from preprocess import democorpus
from preprocess.cli import main


def _files(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_layout_sizes_and_determinism(tmp_path):
    spec = democorpus.CorpusSpec(3, 2, 1, seed=5, min_side=300, max_side=400)
    a = democorpus.build(tmp_path / "a", spec)
    b = democorpus.build(tmp_path / "b", spec)
    assert _files(a) == _files(b)
    c = democorpus.build(tmp_path / "c", democorpus.CorpusSpec(3, 2, 1, seed=6, min_side=300, max_side=400))
    assert _files(a) != _files(c)
    names = sorted(_files(a))
    assert names == ["LOC_synset_mapping.txt",
                     "train/n00000001/n00000001_1.JPEG", "train/n00000001/n00000001_2.JPEG",
                     "train/n00000002/n00000002_1.JPEG", "train/n00000002/n00000002_2.JPEG",
                     "train/n00000003/n00000003_1.JPEG", "train/n00000003/n00000003_2.JPEG",
                     "val/n00000001/ILSVRC2012_val_00000001.JPEG", "val/n00000002/ILSVRC2012_val_00000002.JPEG",
                     "val/n00000003/ILSVRC2012_val_00000003.JPEG"]
    for name in names[1:]:
        with Image.open(a / name) as im:
            assert im.format == "JPEG" and im.mode == "RGB" and 300 <= min(im.size) <= 400
    assert (a / "LOC_synset_mapping.txt").read_text().splitlines()[0] == "n00000001 astronaut"


def test_classes_are_distinct_photos():
    photos = [democorpus.load_photo(c)[1] for c in range(democorpus.max_classes())]
    base = len(democorpus.PHOTOS)
    means = {tuple(np.round(p[:, :, :3].reshape(-1, 3).mean(axis=0))) for p in photos[:base]}
    assert len(means) == base  # each of the first classes is its own photo
    for c in range(base, len(photos)):  # later classes: the same photo, visibly changed
        original = photos[c % base]
        assert photos[c].shape != original.shape or not np.array_equal(photos[c], original)


def test_cli_builds_the_corpus(tmp_path, capsys):
    assert main(["demo-corpus", "--out", str(tmp_path), "--classes", "2", "--train-per-class", "1",
                 "--val-per-class", "1", "--min-side", "300", "--max-side", "300"]) == 0
    assert "2 classes" in capsys.readouterr().out
    assert len(list((tmp_path / "train").rglob("*.JPEG"))) == 2
    assert main(["demo-corpus", "--out", str(tmp_path / "x"), "--classes", "999"]) == 2
