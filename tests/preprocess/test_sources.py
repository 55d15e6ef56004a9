"""preprocess.sources: layouts, label files, class names, keys, and the errors a user sees."""

from __future__ import annotations

import pytest

from preprocess import democorpus
from preprocess.sources import SourceError, discover, read_val_labels


def _touch(path, data=b"x"):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


@pytest.fixture
def tree(tmp_path):
    for wnid in ("n02", "n01", "n03"):
        _touch(tmp_path / "train" / wnid / f"{wnid}_1.JPEG")
        _touch(tmp_path / "train" / wnid / f"{wnid}_2.jpeg")
    _touch(tmp_path / "train" / "n01" / "n01_3")  # no extension: still an input
    _touch(tmp_path / "train" / "n01" / ".DS_Store")  # hidden: never an input
    return tmp_path


def test_class_folders_sorted_wnids_and_every_file(tree):
    for wnid in ("n01", "n02"):
        _touch(tree / "val" / wnid / f"ILSVRC2012_val_{wnid}.JPEG")
    src = discover(tree)
    assert [c.wnid for c in src.classes] == ["n01", "n02", "n03"]
    assert [c.index for c in src.classes] == [0, 1, 2]
    train = src.samples["train"]
    assert len(train) == 7 and "train/n01/n01_3" in [s.rel for s in train]
    assert not any(".DS_Store" in s.rel for s in train)
    assert {s.rel: s.label for s in src.samples["val"]} == {
        "val/n01/ILSVRC2012_val_n01.JPEG": 0, "val/n02/ILSVRC2012_val_n02.JPEG": 1}


@pytest.mark.parametrize("form", ["csv", "plain"])
def test_flat_val_with_either_label_form(tree, form):
    for i in (1, 2, 3):
        _touch(tree / "val" / f"ILSVRC2012_val_0000000{i}.JPEG")
    if form == "csv":
        text = ("ImageId,PredictionString\nILSVRC2012_val_00000001,n03 1 2 3 4 n03 5 6 7 8\n"
                "ILSVRC2012_val_00000002,n01 1 2 3 4\n")
    else:
        text = "ILSVRC2012_val_00000001.JPEG n03\nILSVRC2012_val_00000002.JPEG n01\n"
    (tree / "labels.txt").write_text(text)
    src = discover(tree, val_labels=tree / "labels.txt")
    assert {s.rel: s.wnid for s in src.samples["val"]} == {
        "val/ILSVRC2012_val_00000001.JPEG": "n03", "val/ILSVRC2012_val_00000002.JPEG": "n01"}
    assert [r["path"] for r in src.rejects] == ["val/ILSVRC2012_val_00000003.JPEG"]
    assert src.rejects[0]["reason"] == "no_label"


def test_demo_corpus_flat_val_solution_file(tmp_path):
    corpus = democorpus.build(tmp_path, democorpus.CorpusSpec(2, 1, 2, flat_val=True, min_side=64, max_side=80))
    labels = read_val_labels(corpus / democorpus.VAL_SOLUTION_NAME)
    src = discover(corpus, corpus / democorpus.VAL_SOLUTION_NAME, corpus / democorpus.SYNSETS_NAME)
    assert len(src.samples["val"]) == 4 == len(labels)
    assert [c.name for c in src.classes] == ["astronaut", "coffee"]


def test_synsets_give_names(tree):
    (tree / "syn.txt").write_text("n01 tench, Tinca tinca\nn02 goldfish\n")
    names = [c.name for c in discover(tree, synsets=tree / "syn.txt").classes]
    assert names == ["tench, Tinca tinca", "goldfish", "n03"]


def test_keys_unique_without_dots(tree):
    _touch(tree / "train" / "n02" / "n01_1.png")  # same stem as train/n01/n01_1.JPEG
    _touch(tree / "train" / "n02" / "a.b c.JPEG")
    keys = [s.key for s in discover(tree).samples["train"]]
    assert len(keys) == len(set(keys)) and not any("." in k or " " in k for k in keys)


@pytest.mark.parametrize("case, message", [
    ("missing", "does not exist"),
    ("empty", "is empty"),
    ("no_train", "no train/"),
    ("no_classes", "no class folders"),
    ("flat_val_no_labels", "--val-labels"),
    ("val_class_unknown", "not a class of train"),
])
def test_errors_name_the_problem(tmp_path, case, message):
    src = tmp_path / "src"
    if case != "missing":
        src.mkdir()
    if case == "no_train":
        _touch(src / "val" / "n01" / "a.JPEG")
    if case == "no_classes":
        (src / "train").mkdir()
    if case in ("flat_val_no_labels", "val_class_unknown"):
        _touch(src / "train" / "n01" / "a.JPEG")
        _touch(src / "val" / ("b.JPEG" if case == "flat_val_no_labels" else "n09/b.JPEG"))
    with pytest.raises(SourceError, match=message):
        discover(src)


def test_samples_in_path_order_whatever_the_folder_names(tmp_path):
    """Keys (and their clash suffixes) are assigned in path order: "train/n01 b/" and
    "train/n01-x/" sort before "train/n01/" although "n01" is the first wnid."""
    for wnid in ("n01", "n01-x", "n01 b", "n01a"):
        for name in ("a.JPEG", "b"):
            _touch(tmp_path / "train" / wnid / name)
    train = discover(tmp_path).samples["train"]
    rels = [s.rel for s in train]
    assert rels == sorted(rels) and len(rels) == 8
    assert [s.key for s in train][:3] == ["a", "b", "a_2"]
    assert {s.wnid for s in train if s.rel.startswith("train/n01/")} == {"n01"}
