"""Shared fixtures: a small demo corpus in ImageNet's layout and its shards.

`demo_corpus`: 10 classes, 12 train + 4 val images per class, class folders, with
LOC_synset_mapping.txt (built by `preprocess.democorpus`, a few seconds).
`demo_shards`: `preprocess shard` output of it with --shard-max-count 32 (4 train shards,
2 val shards), DALI index files, dataset.json, rejects.jsonl and stats.npz.
Both are session-scoped and read-only for tests: copy them before changing anything.

At the session's end a test run fails if a process the tests started still runs (issue 13:
nothing outlives its parent), listing each with its command line, and names the
multiprocessing temp folders of dead processes the session left (tests/strays.py).
"""

from __future__ import annotations

import contextlib
import os
import signal

import pytest

from common import mptemp
from preprocess import democorpus
from tests import strays

DEMO_CLASSES = 10
DEMO_TRAIN_PER_CLASS = 12
DEMO_VAL_PER_CLASS = 4
DEMO_SHARD_MAX_COUNT = 32


@pytest.fixture(scope="session")
def demo_corpus(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo_corpus")
    spec = democorpus.CorpusSpec(DEMO_CLASSES, DEMO_TRAIN_PER_CLASS, DEMO_VAL_PER_CLASS, seed=0)
    return democorpus.build(out, spec)


@pytest.fixture(scope="session")
def demo_shards(tmp_path_factory, demo_corpus):
    from preprocess.cli import main

    out = tmp_path_factory.mktemp("demo_shards")
    rc = main([
        "shard", "--src", str(demo_corpus), "--out", str(out),
        "--synsets", str(demo_corpus / democorpus.SYNSETS_NAME),
        "--shard-max-count", str(DEMO_SHARD_MAX_COUNT), "--workers", "1", "--progress", "off",
    ])
    assert rc == 0, "preprocess shard failed on the demo corpus"
    return out


_dead_folders_before: set = set()


def pytest_sessionstart(session):
    strays.adopt_orphans()
    _dead_folders_before.update(mptemp.dead_owners())


def pytest_sessionfinish(session, exitstatus):
    report = session.config.pluginmanager.get_plugin("terminalreporter")
    say = report.write_line if report is not None else print
    left = strays.running_strays()
    if left:
        say(f"\n{len(left)} process(es) started by the tests still running at the end (killed now):", red=True)
        for pid, cmd in left.items():
            say(f"  {pid}: {cmd[:300]}")
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
    folders = [f for f in mptemp.sweep() if f not in _dead_folders_before]
    if folders:
        say(f"\nmultiprocessing temp folders of dead processes left by the session (removed now): "
            f"{', '.join(str(f) for f in folders)}", yellow=True)
