"""Issue 26, row 7: a file name in --src that is not UTF-8 (Linux allows any bytes) made
`preprocess shard` exit 1 with a UnicodeEncodeError. Now such a file is an input like any
other: its key is made from the name (odd bytes as "_"), its path recorded with the odd
bytes escaped (in the sample's .json, and in rejects.jsonl when its content is refused);
a class folder so named is refused in one line (a class is its name everywhere).

Corpora are a few images of the session's `demo_corpus`; runs are in-process."""

from __future__ import annotations

import json
import os
import shutil
import tarfile

from common import exitcodes
from preprocess.cli import main
from tests.faults.corpora import tiny_corpus

RUN = ["--workers", "1", "--progress", "off", "--max-reject-fraction", "1"]



def _members(out) -> dict[str, bytes]:
    found = {}
    for shard in sorted(out.glob("*.tar")):
        with tarfile.open(shard) as tar:
            found.update({m.name: tar.extractfile(m).read() for m in tar})
    return found


def test_a_name_that_is_not_utf8_is_an_input_recorded_escaped(demo_corpus, tmp_path, capsys):
    src, out = tiny_corpus(demo_corpus, tmp_path / "src"), tmp_path / "out"
    folder = os.fsencode(next((src / "train").iterdir()))
    photo = next(p for p in os.listdir(folder))
    shutil.copy(os.path.join(folder, photo), os.path.join(folder, b"bad\xff\xfe.JPEG"))
    with open(os.path.join(folder, b"junk\xff.JPEG"), "wb") as f:
        f.write(b"not an image")
    assert main(["shard", "--src", str(src), "--out", str(out), *RUN]) == 0
    assert "Traceback" not in capsys.readouterr().err
    members = _members(out)
    assert "bad__.jpg" in members and "bad__.cls" in members
    assert json.loads(members["bad__.json"])["src"].endswith("/bad\\xff\\xfe.JPEG")
    rejects = [json.loads(line) for line in (out / "rejects.jsonl").read_text().splitlines()]
    assert [(r["path"].rsplit("/", 1)[-1], r["reason"]) for r in rejects] == [("junk\\xff.JPEG", "not_an_image")]
    assert main(["verify", str(out)]) == exitcodes.OK
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    assert main(["shard", "--src", str(src), "--out", str(out), *RUN]) == 0  # the same source: resumed, same bytes
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before


def test_a_class_folder_whose_name_is_not_utf8_is_one_line_and_exit_2(demo_corpus, tmp_path, capsys):
    src = tiny_corpus(demo_corpus, tmp_path / "src")
    first = next((src / "train").iterdir())
    os.rename(os.fsencode(first), os.fsencode(first.parent) + b"/n0\xff")
    assert main(["shard", "--src", str(src), "--out", str(tmp_path / "out"), *RUN]) == exitcodes.USAGE
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "n0\\xff" in lines[0] and "not UTF-8" in lines[0], lines
