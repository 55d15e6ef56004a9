"""`docker compose up` with nothing set first (no .env), and .env still winning where it is set.

The control service's command and environment, as Compose v2 resolves them, start a real
`trainer serve` here, with a temp folder standing in for the runs volume: it generates the
operator token into the volume (mode 0600), prints it once on a line that
`docker compose logs control | grep token` finds, and keeps it across a restart. Grafana's
entrypoint, run with the grafana service's environment, turns a missing
GRAFANA_ADMIN_PASSWORD into no login at all and a set one into the admin's password."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import uuid
from pathlib import Path

import httpx
import pytest

from tests.deploy.compose import command, mounts, resolved
from tests.deploy.serve import free_port, running
from trainer.runstore import RunStore

VENV_BIN = Path(sys.executable).parent
RUNS_MOUNT = "/data/runs"  # where the runs volume is mounted in the control container
PRINT_ENV = [sys.executable, "-c", "import json, os; print(json.dumps(dict(os.environ)))"]


def service_env(service: dict) -> dict[str, str]:
    """This process's environment without ALEXNET_*, plus the service's, as compose passes it."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("ALEXNET_", "GF_", "GRAFANA_"))}
    return {**base, **{k: "" if v is None else str(v) for k, v in service.get("environment", {}).items()}}


def start_control(config: dict, volume: Path):
    """`trainer serve` as the control service runs it, with `volume` as its runs volume."""
    service = config["services"]["control"]
    argv = [a.replace(RUNS_MOUNT, str(volume)) for a in command(service)]
    argv[0] = str(VENV_BIN / argv[0])  # the image's console script; here this venv's
    port = free_port()
    # Loopback and a free port in place of 0.0.0.0:8000 (argparse keeps the last value).
    argv += ["--host", "127.0.0.1", "--port", str(port)]
    log = volume.parent / f"control-{uuid.uuid4().hex[:6]}.log"
    return running(argv, service_env(service), log, port), log


def a_running_run(volume: Path) -> int:
    store = RunStore(volume / "runs.db")
    run_id, _ = store.start_run("zero-config", {"epochs": 90}, lr=0.01)
    store.update_progress(run_id, epoch=0.0, step=0, lr=0.01)
    store.close()
    return run_id


def divide(url: str, run_id: int, token: str) -> int:
    r = httpx.post(f"{url}/api/runs/{run_id}/lr/divide", json={"reason": "zero-config check"},
                   headers={"Authorization": f"Bearer {token}", "Idempotency-Key": uuid.uuid4().hex}, timeout=30)
    return r.status_code


def token_lines(log: Path) -> list[str]:
    return [line for line in log.read_text().splitlines() if "token" in line]  # what `grep token` shows


@pytest.mark.slow
def test_control_generates_prints_and_keeps_its_token_without_env_file(tmp_path):
    config = resolved()
    assert config["services"]["control"]["environment"]["ALEXNET_TOKEN"] in ("", None)
    volume = tmp_path / "runs-volume"
    volume.mkdir()
    run_id = a_running_run(volume)
    server, log = start_control(config, volume)
    with server as url:
        token_file = volume / "runs.db.token"
        assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
        token = token_file.read_text().strip()
        assert len(token) >= 32
        assert divide(url, run_id, token) == 202
        assert divide(url, run_id, "not-the-token-0123456789") == 401
    assert [line for line in token_lines(log) if token in line], log.read_text()

    server, log = start_control(config, volume)  # a restart: same volume, same token
    with server as url:
        assert divide(url, run_id, token) == 202
    assert token_file.read_text().strip() == token
    assert token not in log.read_text(), "the token is printed only when it is generated"
    kept = [line for line in token_lines(log) if str(token_file) in line]
    assert kept, "the log says where the token is kept"
    assert kept[0].endswith("print it with: docker compose exec control trainer token"), kept
    assert print_token(config, volume) == token  # what that command runs in the container


def print_token(config: dict, volume: Path) -> str:
    """`trainer token` with the control service's environment, as `docker compose exec control`
    runs it, the runs volume at `volume`."""
    env = service_env(config["services"]["control"])
    env["ALEXNET_RUNS_DB"] = env["ALEXNET_RUNS_DB"].replace(RUNS_MOUNT, str(volume))
    out = subprocess.run([str(VENV_BIN / "trainer"), "token"], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


@pytest.mark.slow
def test_a_token_set_in_env_file_wins(tmp_path):
    token = "token-from-dotenv-0123456789abcdef"
    config = resolved(dotenv=f"ALEXNET_TOKEN={token}\n")
    volume = tmp_path / "runs-volume"
    volume.mkdir()
    run_id = a_running_run(volume)
    server, log = start_control(config, volume)
    with server as url:
        assert divide(url, run_id, token) == 202
    assert not (volume / "runs.db.token").exists()
    assert token not in log.read_text() and "operator token: from ALEXNET_TOKEN" in token_lines(log)


def grafana_env(dotenv: str = "") -> dict[str, str]:
    """The environment Grafana's /run.sh gets: the service's entrypoint script (the host file
    compose mounts at the entrypoint's path) run with the service's environment."""
    service = resolved(dotenv=dotenv)["services"]["grafana"]
    shell, script_in_container = service["entrypoint"]
    assert service["command"] == ["/run.sh"]  # the image's own start script, exec'd at the end
    out = subprocess.run([shell, mounts(service)[script_in_container]["source"], *PRINT_ENV], env=service_env(service),
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_grafana_without_a_password_serves_viewers_and_lets_nobody_log_in():
    env = grafana_env()
    assert (env["GF_AUTH_ANONYMOUS_ENABLED"], env["GF_AUTH_ANONYMOUS_ORG_ROLE"]) == ("true", "Viewer")
    assert env["GF_AUTH_DISABLE_LOGIN_FORM"] == "true" and env["GF_AUTH_BASIC_ENABLED"] == "false"
    # Not Grafana's default admin/admin: a random password nobody is told.
    password = env["GF_SECURITY_ADMIN_PASSWORD"]
    assert len(password) >= 32 and password != grafana_env()["GF_SECURITY_ADMIN_PASSWORD"]
    assert "GRAFANA_ADMIN_PASSWORD" not in env


def test_grafana_with_a_password_in_env_file_has_the_admin_login():
    env = grafana_env("GRAFANA_ADMIN_PASSWORD=grafana-from-dotenv\n")
    assert env["GF_SECURITY_ADMIN_PASSWORD"] == "grafana-from-dotenv"
    assert env.get("GF_AUTH_DISABLE_LOGIN_FORM", "false") == "false"
    assert env.get("GF_AUTH_BASIC_ENABLED", "true") == "true"
    assert env["GF_AUTH_ANONYMOUS_ENABLED"] == "true"
