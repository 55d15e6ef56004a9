"""Child processes of `make demo` (trainer/demo/launcher.py): start, watch, and stop them cleanly.

Each child runs in its own session, so a terminal's Ctrl-C reaches only the demo process,
which then stops the children itself, newest first: the trainer gets SIGINT and time to
write its checkpoint before the server goes. A second Ctrl-C kills what is left at once.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from common import procs

POLL_S = 0.2
# How long a child may take to stop after SIGINT before it is killed (the trainer writes a
# checkpoint; on a CPU that is seconds).
STOP_GRACE_S = 60.0


class StopRequested(Exception):
    """Ctrl-C or SIGTERM arrived: unwind, and let stop_all() end the children."""


class ChildFailed(RuntimeError):
    pass


def _die_with_parent() -> None:
    """In the child, before exec: get SIGTERM if the demo process dies without cleaning up
    (SIGKILL), so no trainer is left running on its own (it stops with a checkpoint)."""
    procs.die_with_parent(signal.SIGTERM)


class Supervisor:
    def __init__(self) -> None:
        self.procs: list[tuple[str, subprocess.Popen]] = []
        self.stop_requests = 0
        self._stdout = None  # None: the children share our stdout

    # -- signals ---------------------------------------------------------------------
    def _on_signal(self, signum, frame) -> None:
        self.stop_requests += 1
        if self.stop_requests > 1:
            self.kill_all()

    @contextlib.contextmanager
    def stop_on_signals(self):
        old = {s: signal.signal(s, self._on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield self
        finally:
            for s, handler in old.items():
                signal.signal(s, handler)

    def check(self) -> None:
        if self.stop_requests:
            raise StopRequested()

    @contextlib.contextmanager
    def output_to_stderr(self):
        """Children print to our stderr (when our stdout is an answer another program reads)."""
        self._stdout = sys.stderr
        try:
            yield
        finally:
            self._stdout = None

    # -- children --------------------------------------------------------------------
    def start(self, name: str, argv: list[str], *, env: dict[str, str] | None = None,
              log: Path | None = None) -> subprocess.Popen:
        self.check()
        out = open(log, "ab") if log is not None else self._stdout
        try:
            proc = subprocess.Popen(argv, env={**os.environ, **(env or {})}, stdout=out,
                                    stderr=subprocess.STDOUT if log is not None else self._stdout,
                                    stdin=subprocess.DEVNULL, start_new_session=True,
                                    preexec_fn=_die_with_parent if sys.platform == "linux" else None)
        finally:
            if log is not None:
                out.close()  # the child holds its own descriptor
        self.procs.append((name, proc))
        return proc

    def run_to_end(self, argv: list[str]) -> None:
        """Run a one-shot child (e.g. `preprocess shard`) to completion, still stoppable."""
        proc = self.start(Path(argv[2] if len(argv) > 2 else argv[0]).name, argv)
        while proc.poll() is None:
            self.check()
            time.sleep(POLL_S)
        if proc.returncode != 0:
            raise ChildFailed(f"{' '.join(argv[2:4])} exited with status {proc.returncode}")

    def wait_http(self, proc: subprocess.Popen, url: str, timeout_s: float = 120.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self.check()
            if proc.poll() is not None:
                raise ChildFailed(f"the server exited with status {proc.returncode} before answering {url}")
            with contextlib.suppress(OSError):
                with urllib.request.urlopen(url, timeout=2):
                    return
            time.sleep(POLL_S)
        raise ChildFailed(f"{url} did not answer within {timeout_s:.0f} s")

    def supervise(self, server: subprocess.Popen, trainer: subprocess.Popen) -> int:
        """Until Ctrl-C: the page stays up after training ends; a failing child ends the demo."""
        finished_said = False
        while True:
            self.check()
            if server.poll() is not None:
                print(f"demo: the server exited with status {server.returncode}", file=sys.stderr, flush=True)
                return 1
            rc = trainer.poll()
            if rc not in (None, 0):
                print(f"demo: the trainer exited with status {rc}", file=sys.stderr, flush=True)
                return rc
            if rc == 0 and not finished_said:
                print("demo: training finished; the page stays up until Ctrl-C", flush=True)
                finished_said = True
            time.sleep(POLL_S)

    # -- stopping --------------------------------------------------------------------
    def stop_all(self, grace_s: float = STOP_GRACE_S) -> None:
        """SIGINT to each child's process group, newest first, then wait; kill on timeout."""
        for name, proc in reversed(self.procs):
            if proc.poll() is None:
                self._signal_group(proc, signal.SIGINT)
                try:
                    proc.wait(timeout=grace_s)
                except subprocess.TimeoutExpired:
                    print(f"demo: {name} did not stop in {grace_s:.0f} s; killing it", file=sys.stderr, flush=True)
            # Whatever is left of its group (loader or shard workers) goes too.
            self._signal_group(proc, signal.SIGKILL)
            proc.wait()

    def kill_all(self) -> None:
        for _, proc in self.procs:
            self._signal_group(proc, signal.SIGKILL)

    @staticmethod
    def _signal_group(proc: subprocess.Popen, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, sig)  # start_new_session: the group id is the child's pid
