"""Helpers for the deployment checks: the resolved compose file, as Debian's docker-compose reads it."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO / "docker-compose.yml"
# Values for the variables the file requires; placeholders, never real secrets.
REQUIRED_ENV = {"ALEXNET_TOKEN": "ci-placeholder-token", "GRAFANA_ADMIN_PASSWORD": "ci-placeholder"}


def docker_compose() -> str:
    exe = shutil.which("docker-compose")
    if exe is None:
        pytest.skip("Debian's docker-compose is not installed (.ci/run installs it: apt-get install docker-compose)")
    return exe


def compose(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run `docker-compose -f docker-compose.yml ARGS` without reading a developer's .env."""
    base = {k: v for k, v in os.environ.items() if k not in REQUIRED_ENV}
    # An empty --env-file: the checks must not depend on what a developer put in .env.
    with tempfile.TemporaryDirectory() as tmp:
        empty = Path(tmp, "empty.env")
        empty.write_text("")
        cmd = [docker_compose(), "--project-directory", str(REPO), "--env-file", str(empty),
               "-f", str(COMPOSE_FILE), *args]
        return subprocess.run(cmd, env={**base, **(env or {})}, capture_output=True, text=True, timeout=60)


def resolved(env: dict[str, str] | None = None) -> dict:
    """The compose file after interpolation and merging, as a dict."""
    out = compose("--profile", "preprocess", "config", env={**REQUIRED_ENV, **(env or {})})
    assert out.returncode == 0, out.stderr
    return yaml.safe_load(out.stdout)
