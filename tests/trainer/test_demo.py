"""`python -m trainer.demo` end to end: it builds and shards a corpus, serves the page (on
another port, and says so, when the one asked for is taken), trains, takes an operator's
LR division, and on Ctrl-C (SIGINT) stops both children, leaving a checkpoint, and exits 0;
`--run-name` resumes that run with the kept (0600) token. The tiny --quick configuration
keeps it to tens of seconds."""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import socket
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


def _start(workdir, *flags) -> tuple[subprocess.Popen, Lines]:
    env = {k: v for k, v in os.environ.items() if k != "ALEXNET_TOKEN"}
    proc = subprocess.Popen([sys.executable, "-m", "trainer.demo", "--quick", "--device", "cpu",
                             "--workdir", str(workdir), *flags],
                            cwd=workdir.parent, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    return proc, Lines(proc)


def _ctrl_c(proc: subprocess.Popen, out: Lines) -> None:
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=WAIT_S) == 0, "".join(out.seen)


def _stop_if_running(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.kill()
        proc.wait()


@pytest.fixture(scope="module")
def first_demo(tmp_path_factory):
    """A demo started while its port is taken: it trains, takes a division, and stops on Ctrl-C."""
    workdir = tmp_path_factory.mktemp("demo_root") / "demo"
    workdir.mkdir()
    with socket.socket() as taken:  # someone else's server on the port asked for
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc, out = _start(workdir, "--port", str(port))
        try:
            said = out.wait_for(rf"demo: port {port} is taken; using (\d+)").group(1)
            url = out.wait_for(r"demo: page\s+(http://\S+/)").group(1)
            token = out.wait_for(r"demo: token\s+(\S+)").group(1)
            serve_pid = int(out.wait_for(r"serve pid (\d+)").group(1))
            train_pid = int(out.wait_for(r"train pid (\d+)").group(1))

            def running_run():
                runs = api(url + "api/runs")[1]
                return next((r for r in runs if r["status"] == "running"), None)

            run = poll(running_run, "the trainer to register its run")
            status, cmd = api(f"{url}api/runs/{run['id']}/lr/divide", token, {"factor": 10, "reason": "demo test"})
            assert status == 202
            applied = poll(lambda: (c := api(f"{url}api/commands/{cmd['id']}")[1])["state"] != "pending" and c
                           or None, "the trainer to apply the division")
            _ctrl_c(proc, out)
        finally:
            _stop_if_running(proc)
    return {"workdir": workdir, "port": port, "said": int(said), "url": url, "token": token, "run": run,
            "applied": applied, "pids": (serve_pid, train_pid)}


@pytest.mark.slow
def test_demo_serves_trains_takes_a_division_and_stops_on_ctrl_c(first_demo):
    d = first_demo
    # Port taken: another one, said so, and the page is served there.
    assert d["said"] != d["port"] and d["url"] == f"http://127.0.0.1:{d['said']}/"
    assert d["run"]["demo"], "the page must say that this is a demo configuration"
    assert d["applied"]["state"] == "applied", d["applied"]
    assert not any(alive(pid) for pid in d["pids"])
    # The token was made once and kept, readable by its owner only.
    token_file = d["workdir"] / "runs" / "runs.db.token"
    assert token_file.stat().st_mode & 0o777 == 0o600
    assert token_file.read_text().strip() == d["token"]
    # The trainer was stopped, not killed: it marked its run so and left a checkpoint there.
    from trainer.run.ckptfile import load_checkpoint
    from trainer.runstore import RunStore

    store = RunStore(d["workdir"] / "runs" / "runs.db")
    run = store.get_run(d["run"]["id"])
    assert run["status"] == "stopped"
    assert run["lr"] == pytest.approx(0.01 / 10)  # the demo starts at the paper's 0.01
    ckpt = load_checkpoint(d["workdir"] / "runs" / run["name"] / "checkpoints" / "last.pt")
    assert ckpt["step"] == run["step"] > 0 and ckpt["lr"] == pytest.approx(0.001)


@pytest.mark.slow
def test_run_name_resumes_the_run(first_demo):
    d = first_demo
    from trainer.runstore import RunStore

    store = RunStore(d["workdir"] / "runs" / "runs.db")
    name, stopped_at = d["run"]["name"], store.get_run(d["run"]["id"])["step"]
    proc, out = _start(d["workdir"], "--port", str(free_port()), "--run-name", name)
    try:
        assert out.wait_for(r"demo: token\s+(\S+)").group(1) == d["token"]  # the kept token
        resumed = out.wait_for(r"resumed from (\S+) at step (\d+)")
        assert resumed.group(1).endswith(f"{name}/checkpoints/last.pt") and int(resumed.group(2)) == stopped_at
        poll(lambda: store.get_run(d["run"]["id"])["step"] > stopped_at or None, "the resumed run to step on")
        _ctrl_c(proc, out)
    finally:
        _stop_if_running(proc)
    assert [r["name"] for r in store.list_runs()] == [name], "the same run, not a new one"
    (restart,) = store.events(d["run"]["id"], kinds=["restart"])
    assert restart["payload"]["resumed_from_step"] == stopped_at
    assert store.get_run(d["run"]["id"])["status"] == "stopped"
