"""Settings of `trainer serve`: flags override the environment (ALEXNET_*), which overrides defaults.

Built by the CLI (or a test) and handed to `create_app(settings)`; nothing reads them at import.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from trainer.runstore import DEFAULT_MIN_LR
from trainer.runstore.defaults import DEFAULT_RUNS_DB


class ServerSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ALEXNET_", extra="forbid")

    runs_db: Path = Field(DEFAULT_RUNS_DB, description="the run store (SQLite) to read and write")
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    # ALEXNET_TOKEN; else ALEXNET_TOKEN_FILE (mode 0600); else the file beside the run store.
    token: SecretStr | None = None
    token_file: Path | None = None
    # How an operator prints the token where this server runs, for the log line that says
    # where it is kept (docker-compose.yml: `docker compose exec control trainer token`).
    # None: `trainer token`, with --runs-db unless the environment already names the store.
    token_command: str | None = None
    min_lr: float = Field(DEFAULT_MIN_LR, gt=0, description="a division that would take the LR below this is refused")
    max_body_bytes: int = Field(16 * 1024, ge=256, description="larger request bodies are answered 413")
    # Empty: no CORS headers at all, so a page on another origin cannot call the API.
    cors_origins: list[str] = []
    refresh_s: float = Field(3.0, gt=0, description="how often the page polls for new data")
    # A client must send a request's line and headers within this many seconds of starting
    # it (or of connecting), and its body within as many again; an idle keep-alive connection
    # is closed after keep_alive_s.
    header_timeout_s: float = Field(10.0, gt=0)
    keep_alive_s: int = Field(5, ge=1)
    # /healthz reads one row of each table every time, and the whole file this often.
    store_check_s: float = Field(300.0, ge=0)

    @field_validator("token", mode="before")
    @classmethod
    def _empty_token_is_none(cls, value):
        # docker compose hands an ALEXNET_TOKEN that .env leaves unset to the container as
        # "": that means "no token given" (generate one), not a 0-character token.
        if isinstance(value, str) and not value.strip():
            return None
        return value

    def default_token_file(self) -> Path:
        """Where `trainer serve` keeps the token it generated: beside the run store."""
        return self.runs_db.parent / (self.runs_db.name + ".token")
