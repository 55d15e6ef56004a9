"""`trainer serve --runs-db runs/runs.db`: the progress page, the REST API and /metrics.

Flags override ALEXNET_* environment variables (see settings.py). The operator token comes
from ALEXNET_TOKEN or --token-file; with neither, a token is generated, printed once and
kept (mode 0600) beside the run store for the next start.
"""

from __future__ import annotations

import argparse
import ipaddress
import sys

from pydantic import SecretStr, ValidationError

from preprocess import argtypes

FLAGS = ("runs_db", "host", "port", "token_file", "min_lr", "max_body_bytes", "cors_origins", "refresh_s")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--runs-db", help="the run store (default runs/runs.db, env ALEXNET_RUNS_DB)")
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
    `docker compose logs control | grep token` finds it."""
    if generated:
        return f"operator token: {token}  (generated; kept in {settings.default_token_file()}, mode 0600)"
    if settings.token is not None:
        return "operator token: from ALEXNET_TOKEN"
    if settings.token_file is not None:
        return f"operator token: from {settings.token_file}"
    return f"operator token: kept in {settings.default_token_file()} (generated at the first start)"


def run(args: argparse.Namespace) -> int:
    import uvicorn

    from preprocess import exitcodes
    from trainer.runstore import RunStoreError

    from .app import create_app
    from .auth import TokenError, resolve_token
    from .protocol import uvicorn_options
    from .settings import ServerSettings

    try:
        settings = ServerSettings(**{k: getattr(args, k) for k in FLAGS if getattr(args, k) is not None})
        token, generated = resolve_token(settings, generate=True)
    except (ValidationError, TokenError) as e:
        print(f"trainer serve: {e}", file=sys.stderr)
        return 2
    print(token_line(settings, token, generated), flush=True)
    if not _is_loopback(settings.host):
        print(f"warning: listening on {settings.host}: the token travels in clear over plain HTTP; "
              "put a TLS proxy in front for remote operators", file=sys.stderr)
    try:
        app = create_app(settings.model_copy(update={"token": SecretStr(token)}))
    except RunStoreError as e:  # damaged (CORRUPT), or cannot be opened
        print(f"trainer serve: {e}", file=sys.stderr)
        return exitcodes.for_error(e)
    print(f"serving {settings.runs_db} on http://{settings.host}:{settings.port}/", flush=True)
    uvicorn.run(app, host=settings.host, port=settings.port, log_level=args.log_level, **uvicorn_options(settings))
    return 0
