"""`trainer serve --runs-db runs/runs.db`: the progress page, the REST API and /metrics.

Flags override ALEXNET_* environment variables (see settings.py). The operator token comes
from ALEXNET_TOKEN or --token-file; with neither, a token is generated, printed once and
kept (mode 0600) beside the run store for the next start.
"""

from __future__ import annotations

import argparse
import errno
import ipaddress
import socket
import sys

from pydantic import SecretStr, ValidationError

from common import argtypes
from trainer.runstore.defaults import DEFAULT_RUNS_DB

FLAGS = ("runs_db", "host", "port", "token_file", "min_lr", "max_body_bytes", "cors_origins", "refresh_s")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--runs-db", help=f"the run store (default {DEFAULT_RUNS_DB}, where trainer train writes; "
                        "env ALEXNET_RUNS_DB)")
    parser.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=argtypes.count(0, 65535), help="port (default 8000; 0 picks a free one)")
    parser.add_argument("--token-file", help="file holding the operator token, mode 0600")
    parser.add_argument("--min-lr", type=argtypes.learning_rate,
                        help="refuse divisions that take the LR below this (default 1e-7)")
    parser.add_argument("--max-body-bytes", type=argtypes.count(256, 2**30),
                        help="larger request bodies get 413 (default 16384)")
    parser.add_argument("--cors-origin", dest="cors_origins", action="append",
                        help="allow this browser origin to call the API (repeatable; default: none)")
    parser.add_argument("--refresh-s", type=argtypes.Number(float, 0.0, 3600.0, low_open=True),
                        help="how often the page polls (default 3)")
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def token_line(settings, token: str, generated: bool) -> str:
    """One log line saying where the operator token is; the token itself only when it was just
    generated (printed this once: later starts read the file). One line, so that
    `docker compose logs control | grep token` finds it. It names the command that prints
    the token (`docker compose exec control trainer token` in the compose stack)."""
    from .token import print_command

    if generated:
        return (f"operator token: {token}  (generated; kept in {settings.default_token_file()}, mode 0600; "
                f"print it again with: {print_command(settings)})")
    if settings.token is not None:
        return "operator token: from ALEXNET_TOKEN"
    if settings.token_file is not None:
        return f"operator token: from {settings.token_file}"
    return (f"operator token: kept in {settings.default_token_file()} (generated at the first start); "
            f"print it with: {print_command(settings)}")


def run(args: argparse.Namespace) -> int:
    import uvicorn

    from common import exitcodes
    from trainer.runstore import RunStoreError

    from .app import create_app
    from .auth import TokenError, resolve_token
    from .protocol import drop_query_strings, uvicorn_options
    from .settings import ServerSettings

    try:
        settings = ServerSettings(**{k: getattr(args, k) for k in FLAGS if getattr(args, k) is not None})
    except ValidationError as e:
        print(f"trainer serve: {e}", file=sys.stderr)
        return exitcodes.USAGE
    try:  # first: a port in use changes nothing (no token file, no run store created)
        sock = listen(settings.host, settings.port)
    except OSError as e:
        print(f"trainer serve: {e}", file=sys.stderr)
        return exitcodes.USAGE
    with sock:
        try:
            token, generated = resolve_token(settings, generate=True)
        except TokenError as e:
            print(f"trainer serve: {e}", file=sys.stderr)
            return exitcodes.USAGE
        print(token_line(settings, token, generated), flush=True)
        if not _is_loopback(settings.host):
            print(f"warning: listening on {settings.host}: the token travels in clear over plain HTTP; "
                  "put a TLS proxy in front for remote operators", file=sys.stderr)
        try:
            app = create_app(settings.model_copy(update={"token": SecretStr(token)}))
        except RunStoreError as e:  # damaged (CORRUPT), or cannot be opened
            print(f"trainer serve: {e}", file=sys.stderr)
            return exitcodes.for_error(e)
        host, port = sock.getsockname()[:2]
        shown = f"[{host}]" if ":" in host else host
        print(f"serving {settings.runs_db} on http://{shown}:{port}/", flush=True)
        config = uvicorn.Config(app, log_level=args.log_level, **uvicorn_options(settings))
        drop_query_strings()  # after Config, which configures uvicorn's loggers
        uvicorn.Server(config).run(sockets=[sock])
    return 0


def listen(host: str, port: int) -> socket.socket:
    """The listening socket, bound here rather than by uvicorn: a port in use is one line
    (uvicorn logs several and exits 1 or 3), and `--port 0` can say which port it got."""
    # IPv4 unless the host is an IPv6 address, as uvicorn chooses ("localhost" is 127.0.0.1).
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, family, socket.SOCK_STREAM,
                                                             flags=socket.AI_PASSIVE)[0]
    except socket.gaierror as e:
        raise OSError(f"cannot listen on {host}:{port}: {e.strerror}") from None
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(2048)
    except OSError as e:
        sock.close()
        why = ("the port is in use: stop what listens there, or choose another --port (0 picks a free one)"
               if e.errno == errno.EADDRINUSE else e.strerror or str(e))
        raise OSError(f"cannot listen on {host}:{port}: {why}") from None
    return sock
