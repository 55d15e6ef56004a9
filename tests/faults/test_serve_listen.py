"""Issue 26, rows 9 and 14: `trainer serve`'s socket and its access log.

A port in use was uvicorn's multi-line error and exit 3 (the code of evaluate's undercount);
`--port 0` printed `http://127.0.0.1:0/`; the access log wrote query strings verbatim (a
token put there landed in the logs); HEAD was 405 where GET answered. The real command
runs as a subprocess on loopback."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "server"))
from server_helpers import make_run, serving  # noqa: E402

from common import exitcodes  # noqa: E402

SECRET = "s3cret-query-token-0123456789"


def serve(tmp_path: Path, *args: str) -> subprocess.Popen:
    env = {**os.environ, "ALEXNET_TOKEN": "t" * 32}
    return subprocess.Popen([sys.executable, "-m", "trainer", "serve", "--runs-db", str(tmp_path / "runs.db"), *args],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)


def test_a_port_in_use_is_one_line_and_usage(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = serve(tmp_path, "--port", str(port))
        out, _ = proc.communicate(timeout=60)
    assert proc.returncode == exitcodes.USAGE, out
    lines = out.strip().splitlines()
    assert len(lines) == 1 and f"127.0.0.1:{port}" in lines[0] and "in use" in lines[0], out
    assert not (tmp_path / "runs.db").exists()  # nothing created for a server that never ran


def test_port_zero_names_its_port_and_the_log_keeps_no_query(tmp_path):
    proc = serve(tmp_path, "--port", "0")
    try:
        url, seen = None, []
        deadline = time.monotonic() + 60
        while url is None and time.monotonic() < deadline:
            line = proc.stdout.readline()
            assert line, f"trainer serve ended: {''.join(seen)}"
            seen.append(line)
            if line.startswith("serving "):
                url = line.split(" on ", 1)[1].strip().rstrip("/")
        assert url and not url.endswith(":0"), seen
        with httpx.Client(base_url=url, timeout=30) as c:
            assert c.get("/healthz", params={"token": SECRET}).status_code == 200
            assert c.get("/api/runs", params={"token": SECRET, "x": "1"}).status_code == 200
            assert c.head("/healthz").status_code == 200
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=30)
    log = "".join(seen) + out
    assert '"GET /api/runs HTTP/1.1" 200' in log and '"HEAD /healthz HTTP/1.1" 200' in log, log
    assert SECRET not in log and "?" not in log.split("serving ", 1)[1], log


@pytest.mark.parametrize("path", ["/", "/healthz", "/api/runs", "/api/runs/current", "/api/runs/1/events",
                                  "/api/runs/1/metrics/train_loss", "/metrics", "/docs", "/openapi.json",
                                  "/static/js/dashboard.js", "/api/runs/999", "/api/runs/1/lr/divide"])
def test_head_answers_as_get_does_without_a_body(tmp_path, path):
    with serving(tmp_path / "runs.db") as live, live.client() as c:
        make_run(live.store, steps=20)
        get, head = c.get(path), c.head(path)
    assert head.status_code == get.status_code, (path, head.status_code, get.status_code)
    assert head.content == b""
    if "content-length" in get.headers:
        assert head.headers["content-length"] == get.headers["content-length"]
    assert head.headers.get("content-type") == get.headers.get("content-type")
