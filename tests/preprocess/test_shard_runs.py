"""`preprocess shard` as a job: resume, refusal, parts and merge, bad inputs, errors, SIGKILL."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from oddfiles import odd_files
from shardrun import output_bytes, run_cli, run_inprocess, shard_args

from preprocess import democorpus
from preprocess.contract import WORK_DIR, Manifest, load_manifest, load_stats
from preprocess.verify import verify


def test_rerun_skips_verified_shards_and_redoes_damaged_ones(demo_corpus, demo_shards, tmp_path, capsys):
    out = tmp_path / "out"
    shutil.copytree(demo_shards, out)
    (out / "train-000001.tar").unlink()
    data = bytearray((out / "val-000001.tar").read_bytes())
    data[700] ^= 1
    (out / "val-000001.tar").write_bytes(bytes(data))
    capsys.readouterr()
    assert run_inprocess(shard_args(demo_corpus, out, "--workers", "1")) == 0
    assert "40 decoded in this run" in capsys.readouterr().out  # 32 + 8: only the two damaged units
    assert output_bytes(out) == output_bytes(demo_shards)
    assert run_inprocess(shard_args(demo_corpus, out, "--workers", "1")) == 0
    assert " 0 decoded in this run" in capsys.readouterr().out


def test_output_made_with_other_options_is_refused_unless_overwrite(demo_corpus, demo_shards, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(demo_shards, out)
    result = run_cli(shard_args(demo_corpus, out, "--workers", "1", "--seed", "7"))
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "seed" in result.stderr and "--overwrite" in result.stderr
    assert output_bytes(out) == output_bytes(demo_shards)
    result = run_cli(shard_args(demo_corpus, out, "--workers", "1", "--seed", "7", "--overwrite"))
    assert result.returncode == 0, result.stderr
    assert load_manifest(out)["params"]["seed"] == 7
    assert output_bytes(out) != output_bytes(demo_shards)


def test_parts_merged_equal_a_single_run(demo_corpus, demo_shards, tmp_path):
    parts = [tmp_path / "p0", tmp_path / "p1", tmp_path / "p2"]
    for i, part in enumerate(parts):
        args = shard_args(demo_corpus, part, "--workers", "1", "--part", str(i), "--parts", "3")
        assert run_inprocess(args) == 0
        assert not (part / "dataset.json").exists()
    merged = tmp_path / "merged"
    result = run_cli(["stats", "--merge", *map(str, parts), "--out", str(merged)])
    assert result.returncode == 0, result.stderr
    assert output_bytes(merged) == output_bytes(demo_shards)
    assert load_manifest(merged) == load_manifest(demo_shards)
    a, b = load_stats(merged), load_stats(demo_shards)
    assert np.array_equal(a.cov, b.cov) and np.array_equal(a.mean_image, b.mean_image)
    assert verify(merged) == []


def test_parts_sharing_one_folder_merge_in_place_and_merging_again_is_harmless(demo_corpus, demo_shards, tmp_path):
    shared = tmp_path / "shared"
    for i in (1, 0):
        assert run_inprocess(shard_args(demo_corpus, shared, "--workers", "1", "--part", str(i), "--parts", "2")) == 0
    for _ in range(2):
        result = run_cli(["stats", "--merge", str(shared)])
        assert result.returncode == 0, result.stderr
        assert output_bytes(shared) == output_bytes(demo_shards)
        assert load_manifest(shared) == load_manifest(demo_shards)


def test_merge_with_a_part_missing_says_which_units(demo_corpus, tmp_path):
    part = tmp_path / "p0"
    assert run_inprocess(shard_args(demo_corpus, part, "--workers", "1", "--part", "0", "--parts", "2")) == 0
    result = run_cli(["stats", "--merge", str(part)])
    assert result.returncode == 2 and "units missing" in result.stderr and "Traceback" not in result.stderr


@pytest.fixture(scope="module")
def odd_corpus(tmp_path_factory, demo_corpus):
    """The demo corpus plus one file of each odd kind, spread over the train classes."""
    corpus = tmp_path_factory.mktemp("odd_corpus")
    shutil.copytree(demo_corpus, corpus, dirs_exist_ok=True)
    wnids = sorted(p.name for p in (corpus / "train").iterdir())
    files = odd_files(democorpus.load_photo(6)[1])
    for i, (name, (data, _)) in enumerate(files.items()):
        (corpus / "train" / wnids[i % len(wnids)] / f"odd_{name}").write_bytes(data)
    return corpus, files


def test_each_bad_file_is_rejected_with_its_reason_and_the_rest_converted(odd_corpus, tmp_path):
    corpus, files = odd_corpus
    out = tmp_path / "out"
    result = run_cli(shard_args(corpus, out, "--workers", "2"))
    assert result.returncode == 1  # 6 of 182 rejected > 0.001
    assert "exceeds --max-reject-fraction" in result.stderr and "Traceback" not in result.stderr
    rejects = [json.loads(line) for line in (out / "rejects.jsonl").read_text().splitlines()]
    got = {r["path"].rsplit("/", 1)[-1][len("odd_"):]: r["reason"] for r in rejects}
    assert got == {name: want for name, (_, want) in files.items() if want != "ok"}
    m = load_manifest(out)
    n_ok = sum(want == "ok" for _, want in files.values())
    assert Manifest.of(m).split_count("train") == 120 + n_ok and m["rejected"] == len(got)
    assert "rejected: 6 (" in result.stdout
    assert verify(out) == []  # shards whole despite the failing exit status
    again = run_cli(shard_args(corpus, out, "--workers", "1", "--max-reject-fraction", "0.05"))
    assert again.returncode == 0, again.stderr


@pytest.mark.parametrize("case", ["missing_src", "empty_src", "no_classes", "unwritable_out"])
def test_user_errors_are_one_line_without_traceback(tmp_path, demo_corpus, case):
    src, out = tmp_path / "src", tmp_path / "out"
    if case == "empty_src":
        src.mkdir()
    if case == "no_classes":
        (src / "train").mkdir(parents=True)
    if case == "unwritable_out":
        src = demo_corpus
        (tmp_path / "file").write_text("not a folder")
        out = tmp_path / "file" / "out"
    result = run_cli(["shard", "--src", str(src), "--out", str(out)])
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("preprocess shard: error:")
    assert {"missing_src": "does not exist", "empty_src": "is empty", "no_classes": "no class folders",
            "unwritable_out": "cannot write to --out"}[case] in result.stderr


def test_progress_is_plain_lines_when_not_a_terminal(demo_corpus, tmp_path):
    args = [a for a in shard_args(demo_corpus, tmp_path / "out", "--workers", "1") if a not in ("--progress", "off")]
    result = run_cli(args)
    assert result.returncode == 0
    assert "\r" not in result.stderr and "160/160 images (100%)" in result.stderr and "images/s" in result.stderr


@pytest.mark.slow
def test_sigkill_midway_then_rerun_gives_the_same_bytes(tmp_path):
    corpus = democorpus.build(tmp_path / "corpus", democorpus.CorpusSpec(10, 40, 8, seed=3, min_side=500, max_side=900))
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    assert run_cli(shard_args(corpus, whole, "--workers", "2", max_count=16)).returncode == 0
    proc = subprocess.Popen([sys.executable, "-m", "preprocess.cli", *shard_args(corpus, killed, "--workers", "2", max_count=16)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        if len(list((killed / WORK_DIR).glob("*-u*.json"))) >= 6:
            break
        time.sleep(0.005)
    assert proc.poll() is None, "the run finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (killed / "dataset.json").exists()
    time.sleep(0.2)  # workers die with their parent (PR_SET_PDEATHSIG)
    result = run_cli(shard_args(corpus, killed, "--workers", "2", max_count=16))
    assert result.returncode == 0, result.stderr
    assert output_bytes(killed) == output_bytes(whole)
    assert load_manifest(killed) == load_manifest(whole)
    assert "decoded in this run" in result.stdout and "480 inputs, 480 decoded" not in result.stdout
