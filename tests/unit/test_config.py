"""Controller settings: defaults < TOML config file < FERRY_* environment < explicit overrides."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from ferry.config import DEFAULT_PORT, ControllerSettings, load_controller_settings, parse_listen


def _toml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "ferry.toml"
    path.write_text(text)
    return path


def test_defaults() -> None:
    settings = load_controller_settings()
    assert settings.state_dir == Path("/var/lib/ferry")
    assert settings.listen == f"127.0.0.1:{DEFAULT_PORT}"
    assert settings.database_url is None
    assert settings.heartbeat_interval == 10.0
    assert settings.heartbeat_misses == 3
    assert settings.reconcile_interval == 1.0
    assert settings.log_level == "info"
    assert settings.db_url == "sqlite+aiosqlite:////var/lib/ferry/ferry.db"
    assert settings.admin_token_file == Path("/var/lib/ferry/admin.token")


def test_db_url_defaults_to_sqlite_in_the_state_dir(tmp_path: Path) -> None:
    settings = load_controller_settings(state_dir=tmp_path)
    assert settings.db_url == f"sqlite+aiosqlite:///{tmp_path / 'ferry.db'}"
    assert settings.admin_token_file == tmp_path / "admin.token"


def test_explicit_database_url_wins_over_the_state_dir(tmp_path: Path) -> None:
    url = "postgresql+asyncpg://ferry@db/ferry"
    assert load_controller_settings(state_dir=tmp_path, database_url=url).db_url == url


def test_file_overrides_defaults(tmp_path: Path) -> None:
    config = _toml(
        tmp_path,
        'listen = "0.0.0.0:9000"\nheartbeat_interval = 2.5\nstate_dir = "/srv/ferry"\n',
    )
    settings = load_controller_settings(config)
    assert settings.listen == "0.0.0.0:9000"
    assert settings.heartbeat_interval == 2.5
    assert settings.state_dir == Path("/srv/ferry")
    assert settings.reconcile_interval == 1.0  # not in the file: the default


def test_environment_overrides_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = _toml(tmp_path, 'listen = "0.0.0.0:9000"\nheartbeat_interval = 2.5\n')
    monkeypatch.setenv("FERRY_LISTEN", "10.0.0.1:9100")
    settings = load_controller_settings(config)
    assert settings.listen == "10.0.0.1:9100"
    assert settings.heartbeat_interval == 2.5  # only in the file


def test_environment_overrides_defaults_without_file(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FERRY_HEARTBEAT_MISSES", "5")
    monkeypatch.setenv("FERRY_LOG_LEVEL", "debug")
    settings = load_controller_settings()
    assert (settings.heartbeat_misses, settings.log_level) == (5, "debug")


def test_overrides_beat_environment_and_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = _toml(tmp_path, 'listen = "0.0.0.0:9000"\nreconcile_interval = 3.0\n')
    monkeypatch.setenv("FERRY_LISTEN", "10.0.0.1:9100")
    monkeypatch.setenv("FERRY_RECONCILE_INTERVAL", "4.0")
    settings = load_controller_settings(config, listen="127.0.0.1:9200", reconcile_interval=None)
    assert settings.listen == "127.0.0.1:9200"
    # A None override (a flag not given) does not mask what is below it.
    assert settings.reconcile_interval == 4.0


def test_full_precedence_chain(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = _toml(
        tmp_path,
        "heartbeat_interval = 2.0\nheartbeat_misses = 4\nreconcile_interval = 3.0\n",
    )
    monkeypatch.setenv("FERRY_HEARTBEAT_MISSES", "6")
    monkeypatch.setenv("FERRY_RECONCILE_INTERVAL", "7.0")
    settings = load_controller_settings(config, reconcile_interval=8.0)
    assert settings.log_level == "info"  # default
    assert settings.heartbeat_interval == 2.0  # file
    assert settings.heartbeat_misses == 6  # environment
    assert settings.reconcile_interval == 8.0  # override


def test_missing_config_file_is_an_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    with pytest.raises(ValueError, match=r"config file .*nope\.toml does not exist"):
        load_controller_settings(missing)
    with pytest.raises(ValueError, match="does not exist"):
        load_controller_settings(tmp_path)  # a directory is not a config file


def test_unknown_key_in_file_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="heartbeat_intervall"):
        load_controller_settings(_toml(tmp_path, "heartbeat_intervall = 1.0\n"))


@pytest.mark.parametrize(
    "listen", ["localhost", "localhost:", ":8470", "host:0", "host:65536", "host:http", "[::1]"]
)
def test_bad_listen_is_rejected(listen: str) -> None:
    with pytest.raises(ValueError, match="is not HOST:PORT"):
        load_controller_settings(listen=listen)


def test_bad_listen_from_environment_is_rejected(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FERRY_LISTEN", "nowhere")
    with pytest.raises(ValidationError, match="listen"):
        load_controller_settings()


def test_bad_listen_from_file_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="is not HOST:PORT"):
        load_controller_settings(_toml(tmp_path, 'listen = "0.0.0.0"\n'))


@pytest.mark.parametrize(
    ("listen", "parts"),
    [
        ("127.0.0.1:8470", ("127.0.0.1", 8470)),
        ("[::1]:9000", ("::1", 9000)),
        ("ctl.example:1", ("ctl.example", 1)),
        ("0.0.0.0:65535", ("0.0.0.0", 65535)),
    ],
)
def test_parse_listen(listen: str, parts: tuple[str, int]) -> None:
    assert parse_listen(listen) == parts
    assert load_controller_settings(listen=listen).listen == listen


@pytest.mark.parametrize(
    "overrides",
    [{"heartbeat_interval": 0}, {"heartbeat_misses": 0}, {"reconcile_interval": -1.0}],
)
def test_out_of_range_values_are_rejected(overrides: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        load_controller_settings(**overrides)


def test_result_is_controller_settings(tmp_path: Path) -> None:
    config = _toml(tmp_path, 'log_level = "warning"\n')
    settings = load_controller_settings(config)
    assert isinstance(settings, ControllerSettings)
    assert settings.log_level == "warning"
