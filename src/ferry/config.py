"""Controller settings: defaults < config file (TOML) < FERRY_* environment < command-line flags."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from ferry.scheduler.setup import build as build_scheduler

DEFAULT_PORT = 8470


def parse_listen(listen: str) -> tuple[str, int]:
    """'HOST:PORT' (IPv6 as '[::1]:PORT') into its parts, with a clear error."""
    host, sep, port = listen.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"listen address {listen!r} is not HOST:PORT")
    return host.strip("[]"), int(port)


class ControllerSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FERRY_", extra="forbid")

    state_dir: Path = Field(default=Path("/var/lib/ferry"), description="database, admin token")
    listen: str = Field(default=f"127.0.0.1:{DEFAULT_PORT}", description="HOST:PORT to serve on")
    database_url: str | None = Field(
        default=None, description="SQLAlchemy async URL; default SQLite in the state dir"
    )
    heartbeat_interval: float = Field(default=10.0, gt=0, description="seconds between heartbeats")
    heartbeat_misses: int = Field(default=3, ge=1, description="missed heartbeats until 'down'")
    reconcile_interval: float = Field(default=1.0, gt=0, description="seconds between reconciles")
    log_level: str = Field(default="info")
    migration_policy: dict[str, Any] = Field(
        default_factory=dict, description="convergence policy defaults (see domain/convergence)"
    )
    drain_policy: dict[str, Any] = Field(
        default_factory=dict, description="drain limits and retries (see domain/drain_policy)"
    )
    scheduler_filters: list[str] | None = Field(
        default=None,
        description="optional scheduler filters in order (default: all; see scheduler/filters)",
    )
    scheduler_weighers: dict[str, float] = Field(
        default_factory=dict, description="weigher multipliers (see scheduler/weighers)"
    )
    webhook_timeout: float = Field(
        default=10.0, gt=0, description="seconds one webhook request may take, connect to answer"
    )
    webhook_max_attempts: int = Field(
        default=8, ge=1, description="tries per event and webhook; then the event is dropped"
    )
    webhook_backoff: float = Field(
        default=1.0, gt=0, description="seconds before a webhook's first retry; doubles each time"
    )
    webhook_backoff_max: float = Field(
        default=60.0, gt=0, description="the longest wait between two webhook retries"
    )
    image_max_bytes: int = Field(
        default=64 * 2**30, ge=1, description="the largest image file an upload may store"
    )
    tls_cert: Path | None = Field(default=None, description="controller certificate (HTTPS, mTLS)")
    tls_key: Path | None = Field(default=None)
    tls_ca: Path | None = Field(default=None, description="cluster CA: verifies agents")

    @field_validator("listen")
    @classmethod
    def _valid_listen(cls, value: str) -> str:
        parse_listen(value)
        return value

    @model_validator(mode="after")
    def _valid_scheduler(self) -> ControllerSettings:
        build_scheduler(self.scheduler_filters, self.scheduler_weighers)
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, TomlConfigSettingsSource(settings_cls))

    @property
    def db_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{self.state_dir / 'ferry.db'}"

    @property
    def admin_token_file(self) -> Path:
        return self.state_dir / "admin.token"

    @property
    def images_dir(self) -> Path:
        """The image catalog's files, one per image, named by its id."""
        return self.state_dir / "images"


def load_controller_settings(
    config_file: Path | None = None, **overrides: Any
) -> ControllerSettings:
    """Settings from `config_file` (if any), the environment, then non-None `overrides`."""
    if config_file is not None and not config_file.is_file():
        raise ValueError(f"config file {config_file} does not exist")

    class _FromFile(ControllerSettings):
        model_config = SettingsConfigDict(toml_file=config_file)

    given = {key: value for key, value in overrides.items() if value is not None}
    return _FromFile(**given)
