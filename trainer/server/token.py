"""`trainer token`: print the operator token that `trainer serve` uses, e.g. the one it
generated at its first start and keeps beside the run store (it prints it that once only):

    docker compose exec control trainer token

Reads the same settings as `trainer serve` (flags, then ALEXNET_*), so in the control
container it finds the runs volume's token file without a flag.
"""

from __future__ import annotations

import argparse
import shlex
import sys

from pydantic import ValidationError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--runs-db", help="the run store whose token to print (default runs/runs.db, env ALEXNET_RUNS_DB)")
    parser.add_argument("--token-file", help="print the token of this file instead (mode 0600)")


def print_command(settings) -> str:
    """The `trainer token` command that prints the token of `settings`, in their environment:
    no flag where the run store is the one ALEXNET_RUNS_DB (or the default) names; or what
    ALEXNET_TOKEN_COMMAND says (where the server runs in a container, say)."""
    from .settings import ServerSettings

    if settings.token_command:
        return settings.token_command
    try:
        implied = ServerSettings().runs_db
    except ValidationError:
        implied = None
    if settings.runs_db == implied:
        return "trainer token"
    return f"trainer token --runs-db {shlex.quote(str(settings.runs_db))}"


def run(args: argparse.Namespace) -> int:
    from common import exitcodes

    from .auth import TokenError, resolve_token
    from .settings import ServerSettings

    try:
        settings = ServerSettings(**{k: getattr(args, k) for k in ("runs_db", "token_file") if getattr(args, k) is not None})
        if settings.token is None and settings.token_file is None and not settings.default_token_file().exists():
            print(f"trainer token: no token in {settings.default_token_file()} yet: `trainer serve --runs-db "
                  f"{settings.runs_db}` generates it at its first start", file=sys.stderr)
            return exitcodes.USAGE
        token, _ = resolve_token(settings, generate=False)
    except (ValidationError, TokenError) as e:
        print(f"trainer token: {e}", file=sys.stderr)
        return exitcodes.USAGE
    print(token)
    return 0
