"""Issue 13, rows 2, 10, 12 and 13 for `preprocess shard`: dead writers' temp files swept
(live ones kept), a full disk in one line with exit 5 and nothing half-written, symlink
loops / links outside --src / empty classes / --out inside --src refused with a reason,
and a huge non-image judged by its header before being read.

Corpora are a few images copied from the session's `demo_corpus`; runs are in-process."""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import time
import zlib
from pathlib import Path

import pytest

from common import exitcodes
from common.tempfiles import temp_path
from preprocess import image, shards, sources
from preprocess.cli import main
from tests.faults.corpora import tiny_corpus
from preprocess.contract import WORK_DIR

RUN = ["--workers", "1", "--progress", "off"]



def _dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def _outputs(out) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(out.iterdir()) if p.is_file()}


def _temps(out) -> list[str]:
    return [p.name for p in out.rglob("*") if ".tmp" in p.name or ".write-test" in p.name]


def test_a_rerun_sweeps_dead_writers_temp_files_and_keeps_live_ones(demo_corpus, tmp_path):
    src, out = tiny_corpus(demo_corpus, tmp_path / "src"), tmp_path / "out"
    assert main(["shard", "--src", str(src), "--out", str(out), *RUN]) == 0
    dead, work = _dead_pid(), out / WORK_DIR
    left = [work / f"train-u000000-p0.tar.tmp{dead}",  # the naming before the host was in it
            out / f"dataset.json.tmp{dead}",
            Path(str(temp_path(work / "train-u000000.json")).replace(f".tmp{os.getpid()}-", f".tmp{dead}-"))]
    live = [temp_path(work / "train-u000000-p0.tar"),  # this process: alive
            work / f"train-u000000-p0.tar.tmp{dead}-otherhost"]  # a pid of another host means nothing here
    for p in left + live:
        p.write_bytes(b"half a shard")
    assert main(["shard", "--src", str(src), "--out", str(out), *RUN]) == 0
    assert not any(p.exists() for p in left)
    assert all(p.exists() for p in live)


@pytest.mark.parametrize("free_kb", [120, 1200])  # in a shard piece; in the statistics
def test_a_full_disk_is_one_line_exit_5_and_a_rerun_after_freeing_space_gives_the_same_bytes(
        demo_corpus, tmp_path, small_disk, capsys, free_kb):
    src = tiny_corpus(demo_corpus, tmp_path / "src")
    assert main(["shard", "--src", str(src), "--out", str(tmp_path / "whole"), *RUN]) == 0
    whole = _outputs(tmp_path / "whole")
    capsys.readouterr()
    disk = small_disk(4096)
    filler = disk / "filler"
    filler.write_bytes(b"\0" * ((4096 - free_kb) * 1024))
    out = disk / "out"
    assert main(["shard", "--src", str(src), "--out", str(out), *RUN]) == exitcodes.NO_SPACE
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert "no space left" in lines[0] and str(out) in lines[0] and "rerun" in lines[0]
    assert _temps(out) == []
    filler.unlink()
    assert main(["shard", "--src", str(src), "--out", str(out), *RUN]) == 0
    assert _outputs(out) == whole


def test_symlink_loops_and_links_out_of_src_are_refused_with_a_reason(demo_corpus, tmp_path, capsys):
    src = tiny_corpus(demo_corpus, tmp_path / "src")
    train = src / "train"
    wnid = sorted(p.name for p in train.iterdir())[0]
    (train / wnid / "a.JPEG").symlink_to("b.JPEG")
    (train / wnid / "b.JPEG").symlink_to("a.JPEG")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    shutil.copy(next((train / wnid).glob("*.JPEG")), elsewhere / "far.JPEG")
    (train / wnid / "far.JPEG").symlink_to(elsewhere / "far.JPEG")
    found = sources.discover(src)
    reasons = {r["path"].rsplit("/", 1)[1]: r for r in found.rejects}
    assert reasons["a.JPEG"]["reason"] == "bad_link" and "loop" in reasons["a.JPEG"]["detail"]
    assert "outside --src" in reasons["far.JPEG"]["detail"]
    assert len(found.samples["train"]) == 6  # the links are rejects, the real files inputs
    for target, why in [("../train", "a loop"), (str(elsewhere), "outside --src"), ("n_loop", "symlink loop")]:
        link = train / "n_link"
        if target == "n_loop":
            (train / "n_loop").symlink_to("n_link")
        link.symlink_to(target)
        assert main(["shard", "--src", str(src), "--out", str(tmp_path / "out"), *RUN]) == 2
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and why in err and "n_l" in err and "Traceback" not in err
        link.unlink()
        (train / "n_loop").unlink(missing_ok=True)


def test_an_empty_class_folder_is_an_error_naming_it(demo_corpus, tmp_path):
    src = tiny_corpus(demo_corpus, tmp_path / "src")
    (src / "train" / "n00000000").mkdir()
    with pytest.raises(sources.SourceError, match="n00000000 is an empty class folder"):
        sources.discover(src)


def test_out_inside_src_is_refused(demo_corpus, tmp_path, capsys):
    src = tiny_corpus(demo_corpus, tmp_path / "src")
    assert main(["shard", "--src", str(src), "--out", str(src / "train" / "shards"), *RUN]) == 2
    assert "inside --src" in capsys.readouterr().err
    assert not (src / "train" / "shards").exists()


def test_a_huge_non_image_is_rejected_by_header_before_it_is_read(tmp_path):
    fake = tmp_path / "huge.JPEG"
    with open(fake, "wb") as f:  # sparse: 2 GB that cost no disk
        f.write(b"this is not an image at all")
        f.truncate(2 << 30)
    start = time.monotonic()
    with pytest.raises(image.Rejected) as rejected:
        shards._read(fake)
    assert rejected.value.reason == "not_an_image" and time.monotonic() - start < 1.0
    bomb = tmp_path / "bomb.png"  # a real header claiming 200 Mpx, then 40 MB of nothing
    ihdr = struct.pack(">IIBBBBB", 20000, 10000, 8, 2, 0, 0, 0)
    with open(bomb, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + b"IHDR" + ihdr
                + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr)) + struct.pack(">I", 40 << 20) + b"IDAT")
        f.truncate(40 << 20)
    with pytest.raises(image.Rejected) as rejected:
        shards._read(bomb, max_pixels=100_000_000)
    assert rejected.value.reason == "too_large"
    assert os.path.getsize(bomb) == 40 << 20
