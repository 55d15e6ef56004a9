"""Operator authentication: one bearer token, compared exactly and in constant time, and
the refused attempts counted (all of them) and recorded (at most one event a second per client).

The token comes from ALEXNET_TOKEN, or from a file readable by its owner only (mode 0600).
With neither, `trainer serve` generates one, prints it once and stores it 0600 beside
the run store, so a restart keeps the same token without printing it again.
"""

from __future__ import annotations

import hmac
import os
import secrets
import stat
import threading
import time
from pathlib import Path

from .settings import ServerSettings


class TokenError(RuntimeError):
    pass


def read_token_file(path: Path) -> str:
    """The token in `path`; refuses a file that others than its owner may read or write."""
    try:
        st = path.stat()
    except OSError as e:
        raise TokenError(f"cannot read token file {path}: {e}") from e
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise TokenError(f"token file {path} has mode {stat.S_IMODE(st.st_mode):04o}; "
                         f"make it 0600 (chmod 600 {path})")
    token = path.read_text().strip()
    if len(token) < 16:
        raise TokenError(f"token in {path} is shorter than 16 characters")
    return token


def write_token_file(path: Path, token: str) -> None:
    """Create the file 0600 from the start (no window in which it is world-readable)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")


def resolve_token(settings: ServerSettings, *, generate: bool) -> tuple[str, bool]:
    """(token, generated): the configured token, else a new one if `generate`."""
    if settings.token is not None:
        token = settings.token.get_secret_value()
        if len(token) < 16:
            raise TokenError("ALEXNET_TOKEN is shorter than 16 characters")
        return token, False
    if settings.token_file is not None:
        return read_token_file(settings.token_file), False
    default = settings.default_token_file()
    if default.exists():
        return read_token_file(default), False
    if not generate:
        raise TokenError("no operator token: set ALEXNET_TOKEN or ALEXNET_TOKEN_FILE")
    token = secrets.token_urlsafe(32)
    write_token_file(default, token)
    return token, True


def bearer_matches(header: str | None, token: str) -> bool:
    """True when `header` is exactly 'Bearer <token>': no second space, no trailing
    character of any kind (HTTP itself drops the spaces and tabs around a header's value).
    compare_digest on the bytes as sent (headers are latin-1) keeps the time independent of
    how many leading characters match."""
    if not header:
        return False
    scheme, _, given = header.partition(" ")
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(given.encode("latin-1", "replace"), token.encode())


class AuthFailures:
    """Every refused attempt is counted (`total`, for /metrics); the run's events get at most
    one row per client per `every` seconds, carrying how many attempts it stands for, so that
    a client hammering with a wrong token cannot flood the run store."""

    MAX_CLIENTS = 10_000  # forget quiet clients beyond this many

    def __init__(self, every: float = 1.0):
        self.every = every
        self.total = 0
        self._lock = threading.Lock()
        self._clients: dict[str, tuple[float, int]] = {}  # client -> (last recorded, refused since)

    def refused(self, client: str) -> int:
        """Count one refusal; returns how many the event to record now stands for (0: record none)."""
        now = time.monotonic()
        with self._lock:
            self.total += 1
            last, pending = self._clients.get(client, (-float("inf"), 0))
            pending += 1
            if now - last < self.every:
                self._clients[client] = (last, pending)
                return 0
            if len(self._clients) >= self.MAX_CLIENTS:
                self._clients = {c: v for c, v in self._clients.items() if now - v[0] < self.every}
            self._clients[client] = (now, 0)
            return pending
