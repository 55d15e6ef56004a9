"""A real `trainer serve` child on a free loopback port, for the deployment checks."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, proc: subprocess.Popen, log: Path, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}: {log.read_text()[-2000:]}")
        with contextlib.suppress(OSError):
            with urllib.request.urlopen(url, timeout=2):
                return
        time.sleep(0.2)
    raise TimeoutError(f"{url} did not answer within {timeout_s} s")


@contextlib.contextmanager
def running(argv: list[str], env: dict[str, str], log: Path, port: int):
    """Yield the base URL of the server that `argv` starts on `port`; stop it afterwards."""
    # A file, not a pipe: nobody reads the access log while the test runs, and a full pipe
    # would stall the server.
    proc = subprocess.Popen(argv, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_http(base + "/healthz", proc, log)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextlib.contextmanager
def serving(runs_db: Path, token: str = "deploy-check-token-0123456789", flags: tuple[str, ...] = ()):
    """Yield the base URL of `trainer serve --runs-db RUNS_DB [FLAGS]`; stop it afterwards."""
    port = free_port()
    argv = [sys.executable, "-m", "trainer", "serve", "--runs-db", str(runs_db),
            "--host", "127.0.0.1", "--port", str(port), *flags]
    with running(argv, {**os.environ, "ALEXNET_TOKEN": token}, runs_db.with_name("serve.log"), port) as base:
        yield base
