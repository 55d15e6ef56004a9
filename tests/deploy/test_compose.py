"""docker-compose.yml: Debian's docker-compose accepts it, and each project service's
command really parses with the project's own CLIs (run with --help from this venv)."""

from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from tests.deploy.compose import REQUIRED_ENV, compose, resolved

PROJECT_SERVICES = ("control", "trainer", "preprocess")
VENV_BIN = Path(sys.executable).parent


def test_config_is_accepted():
    out = compose("--profile", "preprocess", "config", "-q", env=REQUIRED_ENV)
    assert out.returncode == 0, out.stderr


def test_config_refuses_to_start_without_a_token():
    out = compose("config", "-q", env={"GRAFANA_ADMIN_PASSWORD": "x"})
    assert out.returncode != 0
    assert "ALEXNET_TOKEN" in out.stderr


def test_services_and_their_wiring():
    services = resolved()["services"]
    assert set(services) == {"control", "trainer", "prometheus", "grafana", "preprocess"}
    trainer = services["trainer"]
    devices = trainer["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["driver"] == "nvidia" and "gpu" in devices[0]["capabilities"]
    caps = set(trainer["environment"]["NVIDIA_DRIVER_CAPABILITIES"].split(","))
    assert {"compute", "utility", "video"} <= caps  # video: the hardware JPEG decoder
    assert trainer["restart"] == "on-failure" and trainer["shm_size"]
    assert "--resume auto" in trainer["command"]
    assert services["preprocess"]["profiles"] == ["preprocess"]
    assert any(v.endswith(":/imagenet:ro") for v in services["preprocess"]["volumes"])
    assert "/healthz" in " ".join(services["control"]["healthcheck"]["test"])
    assert {"shards", "runs"} <= set(resolved()["volumes"])


def test_gpu_count_comes_from_the_environment():
    trainer = resolved({"GPUS": "4"})["services"]["trainer"]
    assert "--nproc-per-node 4" in trainer["command"]
    assert str(trainer["deploy"]["resources"]["reservations"]["devices"][0]["count"]) == "4"


@pytest.mark.parametrize("service", PROJECT_SERVICES)
def test_service_command_parses(service):
    command = resolved()["services"][service]["command"]
    argv = shlex.split(command) if isinstance(command, str) else list(command)
    # The image puts the project's console scripts on PATH; here they are this venv's.
    exe = VENV_BIN / argv[0]
    assert exe.exists(), f"{argv[0]} is not a console script of this venv"
    out = subprocess.run([str(exe), *argv[1:], "--help"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "usage:" in out.stdout
