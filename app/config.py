from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import Annotated, Literal
from urllib.parse import quote

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict, SettingsError

from app.urls import POSTGRES_SCHEMES, SERVED_SCHEMES, UnservedScheme, backend
from app.urls import async_url as async_url  # where the commands and env.py take it

DEFAULT_SQLITE_URL = "sqlite+aiosqlite:///./bookedbarber.db"
# The most connections a worker keeps per database by default: one event loop gains
# nothing from more (its CPU, not the database, is the limit at that concurrency).
DEFAULT_POOL_CAP = 30


class Environment(StrEnum):
    development = "development"
    staging = "staging"
    production = "production"


def _split(value: object) -> object:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


def _lower_case(value: object) -> object:
    return value.lower() if isinstance(value, str) else value


def checked_url(name: str, url: str, served: Mapping[str, str] = SERVED_SCHEMES) -> str:
    """`url` for the asyncio driver, or a ValueError naming `name` (never the URL's value)."""
    try:
        return async_url(url, served)
    except UnservedScheme as exc:
        raise ValueError(exc.told(name)) from None
    except Exception:  # nothing of the URL in the message: it holds the password
        raise ValueError(f"{name} is not a valid database URL") from None

        raise ValueError(f"{name} is not a valid database URL") from None


def _checked_url(name: str, url: str, served: Mapping[str, str] = SERVED_SCHEMES) -> SecretStr:
    return SecretStr(checked_url(name, url, served))


class ConfigError(ValueError):
    """Invalid settings, told by variable name and problem, never by value."""


def describe(exc: ValidationError) -> str:
    problems = []
    for error in exc.errors(include_url=False, include_context=False, include_input=False):
        name = str(error["loc"][0]).upper() if error["loc"] else ""
        message = error["msg"].removeprefix("Value error, ")
        problems.append(f"{name}: {message}" if name else message)
    return "invalid configuration: " + "; ".join(problems)


def load_settings() -> Settings:
    """Settings from the environment; a ConfigError whose text holds no value on failure."""
    try:
        return Settings()
    except ValidationError as exc:
        # `from None`: pydantic's own text carries every input value, secrets included.
        raise ConfigError(describe(exc)) from None
    except SettingsError as exc:
        raise ConfigError(f"invalid configuration: {exc}") from None


class Settings(BaseSettings):
    model_config = SettingsConfigDict(extra="ignore", case_sensitive=False)

    environment: Environment = Environment.development

    database_url: SecretStr | None = None
    replica_urls: Annotated[list[SecretStr], NoDecode] = Field(default_factory=list)
    analytics_database_url: SecretStr | None = None

    # The seed's way of configuring PostgreSQL, kept for existing deployments.
    use_postgres: bool = False
    postgres_host: str = "localhost"
    postgres_port: int = 5432
    postgres_user: str = "bookedbarber"
    postgres_password: SecretStr = SecretStr("")
    postgres_database: str = "bookedbarber"
    postgres_ssl_mode: str = "prefer"

    # Unset, each database gets a fixed pool per worker sized from the connection budget
    # (derive_pools): overflow connections are closed on return, so a pool that relies
    # on them under steady load opens a connection per request.
    pool_size: int = Field(DEFAULT_POOL_CAP, ge=1)
    max_overflow: int = Field(0, ge=0)
    replica_pool_size: int = Field(DEFAULT_POOL_CAP, ge=1)
    replica_max_overflow: int = Field(0, ge=0)
    # Connections all workers together may hold on each database (its max_connections
    # less superuser_reserved_connections and room for other clients).
    pool_connection_budget: int = Field(80, ge=1)
    pool_timeout: float | None = Field(None, gt=0)
    pool_recycle: int = 3600
    pool_pre_ping: bool = True
    statement_timeout_ms: int = Field(30_000, ge=0)
    lock_timeout_ms: int = Field(5_000, ge=0)
    connect_timeout: float = Field(10, gt=0)
    pgbouncer: bool = False
    # Behind PgBouncer 1.21 or later with max_prepared_statements > 0, which keeps
    # protocol-level named prepared statements for its clients: asyncpg's statement
    # cache stays on (no parse or plan per statement). Earlier PgBouncers cannot.
    pgbouncer_prepared_statements: bool = False
    # The three hot reads (app/api/lane.py) and the booking (app/api/write_lane.py) answered
    # before FastAPI's pipeline on PostgreSQL; false sends them through their routes.
    hot_reads: bool = True

    max_replica_lag_seconds: float = Field(5.0, gt=0)
    replica_probe_interval_seconds: float = Field(1.0, gt=0)
    # A replica is back in rotation only after this long healthy and caught up.
    replica_recovery_seconds: float = Field(5.0, ge=0)
    # A replica whose probe takes this many times the fastest peer's (and over
    # replica_slow_floor_seconds) is ejected as if it were down.
    replica_slow_factor: float = Field(10.0, gt=1)
    replica_slow_floor_seconds: float = Field(0.25, gt=0)
    # When every replica is excluded: "primary" sends reads there,
    # "least_lagged" keeps them on the replica that is furthest along.
    replica_fallback: Literal["primary", "least_lagged"] = "primary"
    # Content checks (app/db/consistency.py): every this many seconds (0: off), the next
    # REPLICA_CONSISTENCY_SAMPLE_ROWS keys of each table compared with the primary's; the
    # consistency figure covers the last REPLICA_CONSISTENCY_WINDOW_SECONDS.
    replica_consistency_interval_seconds: float = Field(30.0, ge=0)
    replica_consistency_sample_rows: int = Field(1000, ge=1, le=100_000)
    replica_consistency_window_seconds: float = Field(3600.0, gt=0)

    slow_query_seconds: float = Field(1.0, gt=0)
    # Bookings: a start this far in the past is still taken (clocks disagree a little),
    # and none is taken further ahead than the horizon.
    booking_clock_skew_seconds: float = Field(300.0, ge=0)
    booking_horizon_days: int = Field(365, ge=1, le=36_500)
    # How long start-up waits for the first probe round before serving (it goes on in
    # the background after that; readiness says "starting" until it is done).
    startup_probe_wait_seconds: float = Field(0.0, ge=0)
    api_tokens: Annotated[list[SecretStr], NoDecode] = Field(default_factory=list)

    # Live migration (app/db/live): the PostgreSQL database `db cutover` may switch a
    # SQLite service to; every worker polls the switch state this often.
    migration_target_url: SecretStr | None = None
    migration_poll_seconds: float = Field(0.2, gt=0)
    # Back to SQLite by itself when PostgreSQL answers more than RATE database errors
    # per second over WINDOW seconds after a switch.
    migration_auto_rollback: bool = False
    migration_rollback_error_rate: float = Field(1.0, gt=0)
    migration_rollback_window_seconds: float = Field(10.0, gt=0)
    # A rollback first freezes writes while db sync carries what PostgreSQL still holds
    # (DRAIN seconds at most). Past that, "switch" serves writes on SQLite and reconciles
    # PostgreSQL's leftovers when it returns; "wait" keeps writes paused until drained.
    migration_rollback_drain_seconds: float = Field(5.0, ge=0)
    migration_rollback_undrained: Literal["switch", "wait"] = "switch"

    host: str = "127.0.0.1"
    port: int = 8000
    workers: int = Field(1, ge=1)
    keep_alive_timeout: int = Field(75, ge=1)
    demo_seed: bool = True
    log_level: Literal["critical", "error", "warning", "info", "debug"] = "info"
    # JSON lines by default outside development; readable text in development.
    log_format: Literal["json", "text"] | None = None

    # The edges of the HTTP server: every client gets a bounded share of the process.
    max_body_bytes: int = Field(1024 * 1024, ge=0)
    # Seconds from a request's first byte to the end of its headers, and from a handler's
    # first read of the body to its last byte (a silent connection is idle: keep-alive).
    header_timeout: float = Field(10.0, gt=0)
    body_timeout: float = Field(30.0, gt=0)
    # A request's head: a request target (path and query) over its limit is a 414; a header
    # line (name and value) over its limit, more headers, or more bytes in all (request
    # line and header lines) is a 431. Either closes the connection (app/adapters/uvicorn_http.py).
    max_url_bytes: int = Field(8192, ge=64)
    max_header_line_bytes: int = Field(8192, ge=64)
    max_header_count: int = Field(100, ge=1)
    max_header_bytes: int = Field(65536, ge=1024)
    # With several workers, uvicorn's supervisor pings each one every half second and
    # replaces one that does not answer within this many seconds (uvicorn's own 5 killed
    # workers still starting on a busy or CPU-limited machine, again and again).
    worker_healthcheck_timeout: float = Field(30.0, gt=0)

    _split_lists = field_validator("replica_urls", "api_tokens", mode="before")(_split)
    _lower = field_validator("log_level", "log_format", mode="before")(_lower_case)

    @model_validator(mode="after")
    def _derive(self) -> Settings:
        self._derive_pools()
        if self.pool_timeout is None:
            self.pool_timeout = 10.0 if self.is_production else 30.0
        if self.database_url is None:
            if self.use_postgres or self.environment is not Environment.development:
                self.database_url = SecretStr(self._composed_postgres_url())
            else:
                self.database_url = SecretStr(DEFAULT_SQLITE_URL)
        self.database_url = _checked_url("DATABASE_URL", self.database_url.get_secret_value())
        self.replica_urls = [
            # Streaming replicas, analytics and the live migration's target: PostgreSQL only.
            _checked_url("REPLICA_URLS", u.get_secret_value(), POSTGRES_SCHEMES)
            for u in self.replica_urls
        ]
        if self.analytics_database_url is not None:
            url = self.analytics_database_url.get_secret_value()
            self.analytics_database_url = _checked_url(
                "ANALYTICS_DATABASE_URL", url, POSTGRES_SCHEMES
            )
        if self.migration_target_url is not None:
            url = self.migration_target_url.get_secret_value()
            self.migration_target_url = _checked_url("MIGRATION_TARGET_URL", url, POSTGRES_SCHEMES)
        if self.log_format is None:
            self.log_format = "text" if self.environment is Environment.development else "json"
        if self.is_production and not self.api_tokens:
            raise ValueError("API_TOKENS is required when ENVIRONMENT=production")
        if self.is_sqlite and (self.replica_urls or self.analytics_database_url):
            raise ValueError("replicas need a PostgreSQL DATABASE_URL")
        return self

    def _derive_pools(self) -> None:
        """Fill the pool settings left unset: a fixed pool per worker and database."""
        given = self.model_fields_set
        steady = max(1, min(DEFAULT_POOL_CAP, self.pool_connection_budget // self.workers))
        for name in ("pool_size", "replica_pool_size"):
            if name not in given:
                setattr(self, name, steady)

    def _composed_postgres_url(self) -> str:
        user = quote(self.postgres_user, safe="")
        password = quote(self.postgres_password.get_secret_value(), safe="")
        auth = f"{user}:{password}" if password else user
        return (
            f"postgresql+asyncpg://{auth}@{self.postgres_host}:{self.postgres_port}"
            f"/{self.postgres_database}?ssl={self.postgres_ssl_mode}"
        )

    @property
    def is_production(self) -> bool:
        return self.environment is Environment.production

    @property
    def primary_url(self) -> str:
        assert self.database_url is not None
        return self.database_url.get_secret_value()

    @property
    def is_sqlite(self) -> bool:
        return backend(self.primary_url) == "sqlite"

    @property
    def effective_pool_timeout(self) -> float:
        assert self.pool_timeout is not None
        return self.pool_timeout
