"""`python -m trainer.demo` end to end: it builds and shards a corpus, serves the page,
trains, takes an operator's LR division, and on Ctrl-C (SIGINT) stops both children and
exits 0. The tiny --quick configuration keeps it to tens of seconds."""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request

import pytest

from tests.deploy.serve import free_port

WAIT_S = 240  # generous: a loaded CI machine imports torch slowly; never a timing assertion


class Lines:
    """The demo's output, read on a thread so that waiting for a line can time out."""

    def __init__(self, proc: subprocess.Popen):
        self.q: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=lambda: [self.q.put(line) for line in proc.stdout], daemon=True).start()

    def wait_for(self, pattern: str) -> re.Match:
        deadline = time.monotonic() + WAIT_S
        while time.monotonic() < deadline:
            try:
                line = self.q.get(timeout=1)
            except queue.Empty:
                continue
            self.seen.append(line)
            if m := re.search(pattern, line):
                return m
        raise AssertionError(f"no line matching {pattern!r}; output:\n{''.join(self.seen)}")


def api(url: str, token: str | None = None, body: dict | None = None):
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    req = urllib.request.Request(url, data=None if body is None else json.dumps(body).encode(), headers=headers)
    with urllib.request.urlopen(req, timeout=10) as resp:
        return resp.status, json.loads(resp.read())


def poll(fn, what: str):
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        if (value := fn()) is not None:
            return value
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.slow
def test_demo_serves_trains_takes_a_division_and_stops_on_ctrl_c(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "ALEXNET_TOKEN"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "trainer.demo", "--quick", "--device", "cpu",
         "--workdir", str(tmp_path / "demo"), "--port", str(free_port())],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        out = Lines(proc)
        url = out.wait_for(r"demo: page\s+(http://\S+/)").group(1)
        token = out.wait_for(r"demo: token\s+(\S+)").group(1)
        serve_pid = int(out.wait_for(r"serve pid (\d+)").group(1))
        train_pid = int(out.wait_for(r"train pid (\d+)").group(1))

        def running_run():
            runs = api(url + "api/runs")[1]
            return next((r for r in runs if r["status"] == "running"), None)

        run = poll(running_run, "the trainer to register its run")
        assert run["demo"], "the page must say that this is a demo configuration"
        status, cmd = api(f"{url}api/runs/{run['id']}/lr/divide", token, {"factor": 10, "reason": "demo test"})
        assert status == 202
        applied = poll(lambda: (c := api(f"{url}api/commands/{cmd['id']}")[1])["state"] != "pending" and c or None,
                       "the trainer to apply the division")
        assert applied["state"] == "applied", applied

        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=WAIT_S) == 0, "".join(out.seen)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert not alive(serve_pid) and not alive(train_pid)
    # The trainer was stopped, not killed: it marked its run so in the store.
    from trainer.runstore import RunStore

    store = RunStore(tmp_path / "demo" / "runs" / "runs.db")
    assert store.get_run(run["id"])["status"] == "stopped"
    assert store.get_run(run["id"])["lr"] == pytest.approx(0.01 / 10)  # the demo starts at the paper's 0.01
