"""`trainer token` prints the operator token that `trainer serve` uses (the generated one it
prints only once), and `trainer serve`'s log line about a kept token names that command."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from trainer.server.auth import resolve_token
from trainer.server.cli import token_line
from trainer.server.settings import ServerSettings


def trainer_token(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if not k.startswith("ALEXNET_")}
    return subprocess.run([sys.executable, "-m", "trainer", "token", *args], env={**base, **(env or {})},
                          capture_output=True, text=True, timeout=60)


def test_prints_the_generated_token_from_the_flag_or_the_environment(tmp_path):
    db = tmp_path / "runs" / "runs.db"
    token, generated = resolve_token(ServerSettings(runs_db=db), generate=True)  # what `trainer serve` does
    assert generated
    out = trainer_token("--runs-db", str(db))
    assert (out.returncode, out.stdout) == (0, token + "\n"), out.stderr
    assert trainer_token(env={"ALEXNET_RUNS_DB": str(db)}).stdout == token + "\n"


def test_prints_the_token_from_alexnet_token(tmp_path):
    out = trainer_token("--runs-db", str(tmp_path / "runs.db"), env={"ALEXNET_TOKEN": "a-token-from-the-environment"})
    assert (out.returncode, out.stdout) == (0, "a-token-from-the-environment\n")


def test_no_token_yet_is_one_clear_line_and_exit_2(tmp_path):
    db = tmp_path / "runs.db"
    out = trainer_token("--runs-db", str(db))
    assert out.returncode == 2 and out.stdout == ""
    assert out.stderr.count("\n") == 1 and f"no token in {db}.token yet" in out.stderr
    assert not Path(f"{db}.token").exists()  # never generates one


def test_a_token_file_others_can_read_is_refused(tmp_path):
    db = tmp_path / "runs.db"
    Path(f"{db}.token").write_text("x" * 40 + "\n")
    os.chmod(f"{db}.token", 0o644)
    out = trainer_token("--runs-db", str(db))
    assert out.returncode == 2 and "chmod 600" in out.stderr and out.stdout == ""


@pytest.mark.parametrize("env, expected", [
    ({}, "print it with: trainer token --runs-db {db}"),
    ({"ALEXNET_RUNS_DB": "{db}"}, "print it with: trainer token"),
    ({"ALEXNET_TOKEN_COMMAND": "docker compose exec control trainer token"},
     "print it with: docker compose exec control trainer token"),
])
def test_the_kept_in_line_names_the_command_that_prints_the_token(tmp_path, monkeypatch, env, expected):
    db = tmp_path / "runs.db"
    for k in [k for k in os.environ if k.startswith("ALEXNET_")]:
        monkeypatch.delenv(k)
    for k, v in env.items():
        monkeypatch.setenv(k, v.format(db=db))
    settings = ServerSettings(runs_db=db)
    line = token_line(settings, "unused", generated=False)
    assert line.startswith(f"operator token: kept in {db}.token") and line.endswith(expected.format(db=db))
    assert token_line(settings, "the-token", generated=True).endswith(
        expected.format(db=db).replace("print it with", "print it again with") + ")")
