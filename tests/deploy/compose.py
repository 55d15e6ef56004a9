"""Helpers for the deployment checks: the resolved compose files, as Debian's docker-compose
reads them, in both variants (GPU: docker-compose.yml; CPU: plus docker-compose.cpu.yml)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO / "docker-compose.yml"
GPU = (COMPOSE_FILE,)
CPU = (COMPOSE_FILE, REPO / "docker-compose.cpu.yml")
VARIANTS = {"gpu": GPU, "cpu": CPU}


def interpolated_names() -> set[str]:
    """Every variable the compose files read: the checks must not see a developer's values."""
    return {m for f in CPU for m in re.findall(r"\$\{(\w+)", f.read_text())}


def docker_compose() -> str:
    exe = shutil.which("docker-compose")
    if exe is None:
        pytest.skip("Debian's docker-compose is not installed (.ci/run installs it: apt-get install docker-compose)")
    return exe


def compose(*args: str, files: tuple[Path, ...] = GPU, dotenv: str = "",
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run `docker-compose -f FILE... ARGS` with `dotenv` as the .env file (empty: no .env),
    never a developer's own .env or environment."""
    names = interpolated_names()
    base = {k: v for k, v in os.environ.items() if k not in names and not k.startswith("COMPOSE_")}
    with tempfile.TemporaryDirectory() as tmp:
        env_file = Path(tmp, "dot.env")
        env_file.write_text(dotenv)
        cmd = [docker_compose(), "--project-directory", str(REPO), "--env-file", str(env_file)]
        for f in files:
            cmd += ["-f", str(f)]
        return subprocess.run([*cmd, *args], env={**base, **(env or {})}, capture_output=True, text=True, timeout=60)


def resolved(env: dict[str, str] | None = None, *, files: tuple[Path, ...] = GPU, dotenv: str = "") -> dict:
    """The compose files after interpolation and merging, as a dict."""
    out = compose("--profile", "preprocess", "config", files=files, dotenv=dotenv, env=env)
    assert out.returncode == 0, out.stderr
    return yaml.safe_load(out.stdout)


def started_services(config: dict) -> set[str]:
    """What `docker compose up` starts: the services without a profile (no --profile given)."""
    return {name for name, s in config["services"].items() if not s.get("profiles")}
