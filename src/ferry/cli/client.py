"""Talking to the controller: where (FERRY_URL), as whom (FERRY_TOKEN), and what went wrong."""

from __future__ import annotations

import json
import os
import ssl
import time
import tomllib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

DEFAULT_URL = "http://127.0.0.1:8470"
TIMEOUT = httpx.Timeout(30.0, connect=5.0)


class CliError(Exception):
    """One clear line for the operator; the CLI exits non-zero."""


@dataclass(frozen=True)
class ClientConfig:
    url: str
    token: str | None
    ca: str | None = None  # CA bundle that signed an https controller's certificate


def _config_file() -> Path:
    explicit = os.environ.get("FERRY_CONFIG")
    if explicit:
        return Path(explicit)
    base = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    return base / "ferry" / "cli.toml"


def _read_config_file(path: Path) -> dict[str, Any]:
    if not path.is_file():
        if os.environ.get("FERRY_CONFIG"):
            raise CliError(f"config file {path} (FERRY_CONFIG) does not exist")
        return {}
    try:
        return tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise CliError(f"cannot read config file {path}: {exc}") from exc


def _read_token_file(path: str) -> str:
    try:
        return Path(path).expanduser().read_text().strip()
    except OSError as exc:
        raise CliError(f"cannot read token file {path}: {exc.strerror}") from exc


def resolve(url: str | None, token: str | None) -> ClientConfig:
    """Flags first, then FERRY_URL / FERRY_TOKEN / FERRY_TOKEN_FILE, then the config file
    (url, token or token_file keys)."""
    file = _read_config_file(_config_file())
    url = url or os.environ.get("FERRY_URL") or file.get("url") or DEFAULT_URL
    if token is None:
        token = os.environ.get("FERRY_TOKEN")
    if token is None and os.environ.get("FERRY_TOKEN_FILE"):
        token = _read_token_file(os.environ["FERRY_TOKEN_FILE"])
    if token is None:
        token = file.get("token") or (
            _read_token_file(file["token_file"]) if file.get("token_file") else None
        )
    ca = os.environ.get("FERRY_CA") or file.get("ca")
    if ca and not Path(ca).is_file():
        raise CliError(f"CA file {ca} (FERRY_CA) does not exist")
    return ClientConfig(url=str(url).rstrip("/"), token=token, ca=ca)


def _error_message(response: httpx.Response) -> str:
    try:
        body = response.json()
        message = body.get("message") or body.get("detail") or response.text
    except (json.JSONDecodeError, AttributeError):
        message = response.text.strip() or response.reason_phrase
    return f"{message} (HTTP {response.status_code})"


def poll(
    fetch: Callable[[], dict[str, Any]],
    done: Callable[[dict[str, Any]], bool],
    *,
    timeout: float,
    waiting_for: str,
    every: float = 0.5,
) -> dict[str, Any]:
    """Fetch until `done` says so; CliError naming `waiting_for` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        current = fetch()
        if done(current):
            return current
        if time.monotonic() > deadline:
            raise CliError(f"still waiting for {waiting_for} after {timeout:g}s")
        time.sleep(every)


@dataclass(frozen=True)
class ServerEvent:
    id: int
    kind: str
    data: dict[str, Any]


class Api:
    def __init__(self, config: ClientConfig) -> None:
        self.config = config
        headers = {"Authorization": f"Bearer {config.token}"} if config.token else {}
        verify: ssl.SSLContext | bool = (
            ssl.create_default_context(cafile=config.ca) if config.ca else True
        )
        self.http = httpx.Client(
            base_url=config.url, headers=headers, timeout=TIMEOUT, verify=verify
        )

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = self.http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise CliError(f"cannot reach the controller at {self.config.url}: {exc}") from exc
        if response.is_error:
            raise CliError(_error_message(response))
        return response.json() if response.content else None

    def get(self, path: str, **params: Any) -> Any:
        clean = {key: value for key, value in params.items() if value not in (None, [], ())}
        return self.request("GET", path, params=clean)

    def post(self, path: str, body: dict[str, Any] | None = None) -> Any:
        return self.request("POST", path, json=body or {})

    def delete(self, path: str) -> Any:
        return self.request("DELETE", path)

    def follow(self, path: str, after: int, **params: Any) -> Iterator[ServerEvent]:
        """Server-Sent Events from `after` on; reconnects (resuming by id) if the link drops."""
        last, delay = after, 0.5
        while True:
            try:
                for event in self._stream(path, last, params):
                    last, delay = event.id, 0.5
                    yield event
            except httpx.TransportError:
                time.sleep(delay)
                delay = min(delay * 2, 5.0)

    def _stream(self, path: str, after: int, params: dict[str, Any]) -> Iterator[ServerEvent]:
        query = {key: value for key, value in params.items() if value not in (None, [], ())}
        headers = {"Accept": "text/event-stream", "Last-Event-ID": str(after)}
        timeout = httpx.Timeout(None, connect=5.0)
        with self.http.stream(
            "GET", path, params=query, headers=headers, timeout=timeout
        ) as response:
            if response.is_error:
                response.read()
                raise CliError(_error_message(response))
            fields: dict[str, str] = {}
            for line in response.iter_lines():
                if not line:
                    if "data" in fields:
                        yield ServerEvent(
                            int(fields.get("id", "0")),
                            fields.get("event", ""),
                            json.loads(fields["data"]),
                        )
                    fields = {}
                elif not line.startswith(":"):
                    name, _, value = line.partition(":")
                    fields[name] = value.removeprefix(" ")
