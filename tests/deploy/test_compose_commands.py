"""Each project service's command in docker-compose.yml, as the container would run it,
parsed by the real parsers: torchrun's own, then `trainer train`'s for the module's
arguments; `trainer serve`'s; `preprocess shard`'s. An unknown or malformed flag fails
here (with `--help` appended, argparse would exit 0 before it saw one)."""

from __future__ import annotations

import argparse

import pytest

from tests.deploy.compose import CPU, GPU, command, resolved


def _command(service: str, env: dict[str, str] | None = None, files=GPU) -> list[str]:
    return command(resolved(env, files=files)["services"][service])


def _parse(parser: argparse.ArgumentParser, argv: list[str], capsys) -> argparse.Namespace:
    try:
        return parser.parse_args(argv)
    except SystemExit as e:
        raise AssertionError(f"{parser.prog} refused {argv}: {capsys.readouterr().err.strip()}") from e


def _trainer_train(argv: list[str], capsys) -> tuple[argparse.Namespace, argparse.Namespace]:
    from torch.distributed.run import get_args_parser

    from trainer.cli import build_parser

    assert argv[0] == "torchrun"
    launcher = _parse(get_args_parser(), argv[1:], capsys)
    assert launcher.module and launcher.training_script == "trainer", "torchrun must run `-m trainer`"
    command, *rest = launcher.training_script_args
    assert command == "train"
    return launcher, _parse(build_parser("train")[0], rest, capsys)


def test_trainer_command_parses_with_torchrun_and_trainer_train(capsys):
    launcher, args = _trainer_train(_command("trainer", {"GPUS": "4", "RUN_NAME": "r1"}), capsys)
    assert launcher.standalone and launcher.nproc_per_node == "4"
    assert (args.device, args.backend, args.resume) == ("cuda", "dali", "auto")
    assert args.data == "/data/shards/imagenet" and args.run_dir == "/data/runs/r1"
    assert args.runs_db == "/data/runs/runs.db"


def test_train_args_from_the_environment_reach_the_trainer(capsys):
    _, args = _trainer_train(_command("trainer", {"TRAIN_ARGS": "--lr-policy plateau --patience 2"}), capsys)
    assert (args.lr_policy, args.patience) == ("plateau", 2)


def test_the_entrypoints_demo_flags_parse_after_the_command(capsys):
    """Without ImageNet shards docker/trainer-entrypoint.sh appends `trainer.demo --prepare`'s
    flags to the command; argparse keeps the last value of a repeated flag."""
    from trainer.demo.launcher import demo_plan, parse_args, train_argv

    demo_args = parse_args(["--workdir", "/data/shards/demo", "--runs-dir", "/data/runs", "--device", "cuda"])
    demo_args.run_name = "demo"
    flags = train_argv(demo_args, demo_plan("cuda"), "/data/shards/demo/shards-x", demo_args.runs_dir)
    _, args = _trainer_train(_command("trainer") + flags, capsys)
    assert args.data == "/data/shards/demo/shards-x" and args.run_dir == "/data/runs/demo" and args.demo


def test_control_command_parses_with_trainer_serve(capsys):
    from trainer.cli import build_parser

    argv = _command("control")
    assert argv[:2] == ["trainer", "serve"]
    args = _parse(build_parser("serve")[0], argv[2:], capsys)
    assert (args.runs_db, args.host, args.port) == ("/data/runs/runs.db", "0.0.0.0", 8000)


def test_preprocess_command_parses_with_preprocess_shard(capsys):
    from preprocess.cli import build_parser

    argv = _command("preprocess", {"PREPROCESS_WORKERS": "6"})
    assert argv[0] == "preprocess"
    args = _parse(build_parser(), argv[1:], capsys)
    assert args.command == "shard" and args.workers == 6
    assert str(args.src) == "/imagenet" and str(args.out) == "/data/shards/imagenet"
    # The label files are the ones `preprocess shard` finds at the top of --src by itself.
    assert args.val_labels is None and args.synsets is None


@pytest.mark.parametrize("bad", ["--no-such-flag", "--patience two"])
def test_a_bad_flag_in_train_args_is_refused(bad, capsys):
    with pytest.raises(AssertionError, match="refused"):
        _trainer_train(_command("trainer", {"TRAIN_ARGS": bad}), capsys)


def test_cpu_variants_trainer_command_parses_with_trainer_train(capsys):
    from trainer.cli import build_parser

    argv = _command("trainer", {"TRAIN_ARGS": "--max-steps 5"}, files=CPU)
    assert argv[:2] == ["trainer", "train"]
    args = _parse(build_parser("train")[0], argv[2:], capsys)
    assert (args.device, args.backend, args.resume, args.max_steps) == ("cpu", "reference", "auto", 5)
