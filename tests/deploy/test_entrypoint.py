"""docker/trainer-entrypoint.sh: with ImageNet shards the trainer's command runs as given;
without them, or in the CPU variant (DEMO_ONLY=1), the demo corpus is built and its flags
override the command's data and run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.deploy.compose import CPU, REPO, command, resolved
from trainer.cli import build_parser

ENTRYPOINT = REPO / "docker/trainer-entrypoint.sh"
# Stands in for torchrun: prints the arguments it was given as JSON.
ECHO_ARGV = [sys.executable, "-c", "import json, sys; print(json.dumps(sys.argv[1:]))"]


def run_entrypoint(tmp_path: Path, command_args: list[str], service_env: dict | None = None) -> list[str]:
    env = {**os.environ, "DEMO_DEVICE": "cpu", **(service_env or {}),
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "IMAGENET_SHARDS": str(tmp_path / "imagenet-shards"), "DEMO_ROOT": str(tmp_path / "demo"),
           "RUNS_ROOT": str(tmp_path / "runs"), "DEMO_PREPARE_ARGS": "--quick"}
    out = subprocess.run(["sh", str(ENTRYPOINT), *ECHO_ARGV, *command_args], env=env,
                         capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def trainer_command_args(service: str = "trainer", files=None) -> list[str]:
    argv = command(resolved(**({"files": files} if files else {}))["services"][service])
    return argv[argv.index("train") + 1:]  # what torchrun hands to `trainer train`


def fake_imagenet_shards(tmp_path: Path) -> None:
    shards = tmp_path / "imagenet-shards"
    shards.mkdir()
    (shards / "dataset.json").write_text("{}")


def test_imagenet_shards_are_trained_as_the_command_says(tmp_path):
    fake_imagenet_shards(tmp_path)
    args = trainer_command_args()
    assert run_entrypoint(tmp_path, args) == args
    assert not (tmp_path / "demo").exists()


@pytest.mark.slow
def test_without_imagenet_the_demo_corpus_is_trained(tmp_path):
    args = run_entrypoint(tmp_path, trainer_command_args())
    parser, _ = build_parser("train")
    config = parser.parse_args(args)  # the trainer's own parser: the last value of a flag wins
    data = Path(config.data)
    assert data.is_relative_to(tmp_path / "demo") and (data / "dataset.json").exists()
    assert Path(config.run_dir) == tmp_path / "runs" / "demo"
    assert config.demo and config.resume == "auto"


@pytest.mark.slow
def test_cpu_variant_trains_the_demo_on_the_cpu_even_beside_imagenet_shards(tmp_path):
    fake_imagenet_shards(tmp_path)
    service = resolved(files=CPU)["services"]["trainer"]
    args = run_entrypoint(tmp_path, trainer_command_args("trainer", CPU), service["environment"])
    parser, _ = build_parser("train")
    config = parser.parse_args(args)
    assert Path(config.data).is_relative_to(tmp_path / "demo") and config.demo
    assert config.device == "cpu" and config.backend == "reference" and config.resume == "auto"
