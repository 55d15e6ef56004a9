"""Issue 26, rows 5 and 6: every numeric flag of every `trainer` and `preprocess` subcommand
is checked by its parser. 0, -1, NaN, infinity and a huge value are each one line on stderr
and exit 2, except where the flag gives the value a meaning (`ACCEPTED`, with the reason);
`--device cuda` on a host without CUDA is one line and exit 2 too.

The table is read from the parsers themselves (`FLAGS`): a flag added with a bare `type=int`
takes -1 and fails here. The parsers run in-process; a few real invocations below prove
the same line and status end to end.
"""

from __future__ import annotations

import argparse
import subprocess
import sys

import pytest
import torch

from preprocess.cli import build_parser as preprocess_parser
from trainer.cli import COMMANDS
from trainer.cli import build_parser as trainer_parser

HUGE_INT, HUGE_FLOAT = "1" + "0" * 30, "1e300"
PROBES = ("0", "-1", "nan", "inf", "huge")

# (program, flag) -> the probes it takes, and why 0 (or -1) means something there.
ACCEPTED = {
    ("trainer train", "--max-steps"): {"0"},  # all epochs
    ("trainer train", "--num-classes"): {"0"},  # from dataset.json
    ("trainer train", "--momentum"): {"0"},  # plain SGD (tests use it)
    ("trainer train", "--weight-decay"): {"0"},
    ("trainer train", "--dropout"): {"0"},  # the ablation without dropout
    ("trainer train", "--bias-const"): {"0", "-1"},  # any constant; the paper's 1 or 0
    ("trainer train", "--max-drops"): {"0"},  # the policy never divides
    ("trainer train", "--plateau-threshold"): {"0"},  # any improvement counts (before issue 29)
    ("trainer train", "--num-workers"): {"0"},  # auto
    ("trainer train", "--lighting-std"): {"0"},  # no PCA lighting (tests, ablations)
    ("trainer train", "--seed"): {"0"},
    ("trainer train", "--val-every"): {"0"},  # never validate
    ("trainer train", "--checkpoint-minutes"): {"0"},  # every step
    ("trainer train", "--keep-checkpoints"): {"0"},  # last.pt only
    ("trainer train", "--step-delay"): {"0"},  # the test hook off
    ("trainer train", "--warmup-epochs"): {"0"},  # no warm-up
    ("trainer train", "--hang-timeout"): {"0"},  # never end a run for a stalled rank
    ("trainer serve", "--port"): {"0"},  # a free port
    ("trainer evaluate", "--num-workers"): {"0"},  # auto, as in train
    ("trainer evaluate", "--workers"): {"0"},  # the deprecated name of --num-workers
    ("trainer neighbors", "--num-workers"): {"0"},  # auto, as in train
    ("trainer neighbors", "--workers"): {"0"},
    ("trainer experiment", "--seed"): {"0"},
    ("preprocess shard", "--seed"): {"0"},
    ("preprocess shard", "--holdout-seed"): {"0"},
    ("preprocess shard", "--part"): {"0"},  # the first part
    ("preprocess shard", "--max-reject-fraction"): {"0"},  # no reject allowed
    ("preprocess demo-corpus", "--seed"): {"0"},
}


def _parsers() -> dict[str, argparse.ArgumentParser]:
    parsers = {f"trainer {name}": trainer_parser(name)[0] for name in COMMANDS}
    sub = next(a for a in preprocess_parser()._actions if isinstance(a, argparse._SubParsersAction))
    parsers.update({f"preprocess {name}": p for name, p in sub.choices.items()})
    return parsers


def _numeric(action: argparse.Action) -> bool:
    return bool(action.option_strings) and (action.type in (int, float) or hasattr(action.type, "describe"))


def _is_float(action: argparse.Action) -> bool:
    return action.type is float or getattr(getattr(action.type, "item", action.type), "kind", int) is float


def _required(parser: argparse.ArgumentParser) -> list[str]:
    """Values for the required options and positionals, so that only the probed flag can fail."""
    argv: list[str] = []
    for a in parser._actions:
        value = str(a.choices[0]) if a.choices else "x"
        if not a.option_strings:
            argv.append(value)
        elif a.required:
            argv += [a.option_strings[-1], value]
    return argv


PARSERS = _parsers()
FLAGS = [(prog, a) for prog, p in PARSERS.items() for a in p._actions if _numeric(a)]
CASES = [(prog, a, probe) for prog, a in FLAGS for probe in PROBES]


def test_the_table_covers_both_programs_and_every_known_flag():
    progs = {prog for prog, _ in FLAGS}
    assert {"trainer train", "trainer serve", "trainer evaluate", "preprocess shard", "preprocess demo-corpus"} <= progs
    assert len(FLAGS) >= 40, [f"{p} {a.option_strings[-1]}" for p, a in FLAGS]
    flags = {(prog, a.option_strings[-1]) for prog, a in FLAGS}
    assert set(ACCEPTED) <= flags, set(ACCEPTED) - flags  # a renamed flag must not leave a stale exception


@pytest.mark.parametrize("prog, action", FLAGS, ids=[f"{p} {a.option_strings[-1]}" for p, a in FLAGS])
def test_every_numeric_flag_names_its_range(prog, action):
    """A bare int or float has no range: give it one in `common.argtypes`."""
    assert hasattr(action.type, "describe") or action.choices, f"{prog} {action.option_strings[-1]}: bare {action.type}"


@pytest.mark.parametrize("prog, action, probe", CASES,
                         ids=[f"{p} {a.option_strings[-1]} {v}" for p, a, v in CASES])
def test_a_value_out_of_range_is_one_line_and_exit_2(prog, action, probe, capsys):
    parser, flag = PARSERS[prog], action.option_strings[-1]
    value = (HUGE_FLOAT if _is_float(action) else HUGE_INT) if probe == "huge" else probe
    argv = [*_required(parser), f"{flag}={value}"]  # "=": argparse would take -1 for a flag
    if probe in ACCEPTED.get((prog, flag), ()):
        parser.parse_args(argv)
        return
    with pytest.raises(SystemExit) as exit_:
        parser.parse_args(argv)
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert exit_.value.code == 2 and len(lines) == 1, err
    assert lines[0].startswith(f"{prog}: error: argument ") and flag in lines[0] and value in lines[0], lines[0]


# End to end: the console scripts as a user runs them.
E2E = [
    ["trainer", "train", "--data", "d", "--run-dir", "r", "--log-every", "0"],  # was a ZeroDivisionError
    ["trainer", "train", "--data", "d", "--run-dir", "r", "--width", "-1"],  # was exit 0
    ["trainer", "evaluate", "--checkpoint", "c", "--batch-size", "nan"],
    ["trainer", "serve", "--port", "70000"],
    ["preprocess", "shard", "--src", "s", "--out", "o", "--max-reject-fraction", "inf"],
]


@pytest.mark.parametrize("argv", E2E, ids=[" ".join(a[:2] + a[-2:]) for a in E2E])
def test_the_console_scripts_say_one_line_and_exit_2(argv, tmp_path):
    module = {"trainer": "trainer", "preprocess": "preprocess.cli"}[argv[0]]
    r = subprocess.run([sys.executable, "-m", module, *argv[1:]], capture_output=True, text=True, cwd=tmp_path,
                       timeout=120)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert argv[-2] in r.stderr and "Traceback" not in r.stderr and not r.stdout.strip()


@pytest.mark.skipif(torch.cuda.is_available(), reason="this host has CUDA: --device cuda is honoured")
@pytest.mark.parametrize("command", ["train", "evaluate", "predict", "neighbors"])
def test_device_cuda_without_cuda_is_one_line_and_exit_2(command, demo_shards, tmp_path):
    """Row 5: a 30-line traceback ending in a good sentence, exit 1."""
    argv = {"train": ["--data", str(demo_shards), "--run-dir", str(tmp_path / "run"), "--width", "0.0625",
                      "--batch-size", "8", "--backend", "reference"],
            "evaluate": ["--checkpoint", str(tmp_path / "c.pt"), "--data", str(demo_shards)],
            "predict": ["--checkpoint", str(tmp_path / "c.pt"), "x.jpg"],
            "neighbors": ["--checkpoint", str(tmp_path / "c.pt"), "x.jpg"]}[command]
    r = subprocess.run([sys.executable, "-m", "trainer", command, *argv, "--device", "cuda"], capture_output=True,
                       text=True, cwd=tmp_path, timeout=120)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "--device cuda" in r.stderr and "CUDA" in r.stderr
    assert not (tmp_path / "run").exists()  # refused before anything is made
