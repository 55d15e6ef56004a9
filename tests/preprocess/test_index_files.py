"""DALI index files through `preprocess.contract`, their only reader and writer: round trip,
the fast fixed-layout parse against the general one, versions checked on read."""

from __future__ import annotations

import pytest

from preprocess.contract import DataError, load_manifest, write_manifest
from preprocess.indexfile import format_index, read_index, read_index_columns, read_index_count, write_index

UNIFORM = [[("jpg", 512 + 4096 * i, 1000 + i, f"k{i}.jpg"), ("cls", 2048 + 4096 * i, 1 + i % 3, f"k{i}.cls"),
            ("json", 3072 + 4096 * i, 60, f"k{i}.json")] for i in range(50)]


def test_round_trip_and_columns(tmp_path):
    path = tmp_path / "a.idx"
    write_index(path, UNIFORM)
    assert read_index(path) == UNIFORM
    assert read_index_count(path) == 50
    columns = read_index_columns(path, ("jpg", "cls"))
    assert columns.tolist() == [[m[0][1], m[0][2], m[1][1], m[1][2]] for m in UNIFORM]
    assert not list(tmp_path.glob("*.tmp*"))


def test_mixed_layouts_parse_like_the_general_parser(tmp_path):
    """Lines with other members or another order: the fast path must not misread them."""
    mixed = [list(m) for m in UNIFORM]
    mixed[3] = mixed[3][:2]  # no json
    mixed[7] = [mixed[7][1], mixed[7][0]]  # cls before jpg
    mixed[8] = mixed[8] + [("txt", 9, 1, "k8.txt")]
    path = tmp_path / "b.idx"
    write_index(path, mixed)
    want = [[m[e][1], m[e][2]] for m in mixed for e in (0, 1)]
    want = [want[i] + want[i + 1] for i in range(0, len(want), 2)]
    want[7] = [mixed[7][1][1], mixed[7][1][2], mixed[7][0][1], mixed[7][0][2]]
    assert read_index_columns(path, ("jpg", "cls")).tolist() == want


@pytest.mark.parametrize("text, match", [
    ("v1.1 1\njpg 512 10 k.jpg cls 1024 1 k.cls\n", "v1.2"),
    ("v1.2 2\njpg 512 10 k.jpg cls 1024 1 k.cls\n", "2 samples"),
    ("v1.2 1\njpg x 10 k.jpg cls 1024 1 k.cls\n", "not a number"),
    ("v1.2 1\njpg 512 10 k.jpg\n", "cls"),
])
def test_bad_index_files_are_data_errors_naming_the_fix(tmp_path, text, match):
    path = tmp_path / "c.idx"
    path.write_text(text)
    with pytest.raises(DataError, match=match) as err:
        read_index_columns(path, ("jpg", "cls"))
    assert "preprocess shard" in str(err.value)
    if "v1.1" in text:
        for reader in (read_index, read_index_count):
            with pytest.raises(DataError, match="v1.2"):
                reader(path)


def test_manifest_version_is_checked_both_ways(tmp_path):
    with pytest.raises(ValueError):
        write_manifest(tmp_path, {"format_version": 0})
    (tmp_path / "dataset.json").write_text('{"format_version": 0}')
    with pytest.raises(DataError, match="format version"):
        load_manifest(tmp_path)
    write_manifest(tmp_path, {"format_version": 1, "classes": []})
    assert load_manifest(tmp_path)["classes"] == []
    assert format_index([]) == "v1.2 0\n"
