"""A real controller process and the real `ferry` console script, for tests."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

FERRY = str(Path(sys.executable).parent / "ferry")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class LiveController:
    state_dir: Path
    heartbeat_interval: float = 0.5
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def admin_token(self) -> str:
        return (self.state_dir / "admin.token").read_text().strip()

    def start(self) -> None:
        env = {
            **os.environ,
            "FERRY_HEARTBEAT_INTERVAL": str(self.heartbeat_interval),
            "FERRY_RECONCILE_INTERVAL": "0.1",
        }
        log = (self.state_dir.parent / f"controller-{self.port}.log").open("ab")
        self.process = subprocess.Popen(
            [
                FERRY,
                "controller",
                "serve",
                "--state-dir",
                str(self.state_dir),
                "--listen",
                f"127.0.0.1:{self.port}",
                "--log-level",
                "warning",
            ],
            env=env,
            stdout=log,
            stderr=log,
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"controller exited with {self.process.returncode}")
            try:
                if httpx.get(f"{self.url}/v1/health", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        raise RuntimeError("controller did not become healthy in 20s")

    def stop(self, sig: signal.Signals = signal.SIGTERM) -> int:
        """Stop the process by its PID and return its exit code."""
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        code = self.process.returncode
        self.process = None
        return code

    def api(self, method: str, path: str, token: str | None = None, **kwargs: Any) -> Any:
        headers = {"Authorization": f"Bearer {token or self.admin_token}"}
        response = httpx.request(method, f"{self.url}{path}", headers=headers, timeout=10, **kwargs)
        response.raise_for_status()
        return response.json()

    def token(self, name: str, role: str) -> str:
        return str(self.api("POST", "/v1/tokens", json={"name": name, "role": role})["secret"])

    def register(self, agent_token: str, *names: str) -> None:
        for index, name in enumerate(names, start=1):
            self.api(
                "POST",
                "/v1/agent/register",
                token=agent_token,
                json={
                    "name": name,
                    "management_address": f"198.18.0.{index}",
                    "migration_address": f"198.18.0.{index}",
                    "inventory": {"vcpus": 8, "ram_mb": 16384, "disk_gb": 100},
                    "capabilities": {
                        "cpu_model": "qemu64",
                        "qemu_version": "7.2",
                        "machine_type": "pc-q35-7.2",
                        "networks": ["default"],
                    },
                },
            )


@dataclass
class Cli:
    """Runs the installed `ferry` script against a controller, as an operator would."""

    url: str
    token: str | None
    extra_env: dict[str, str] = field(default_factory=dict)

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("FERRY_")}
        env.update({"FERRY_URL": self.url, "COLUMNS": "200", "NO_COLOR": "1", **self.extra_env})
        env["XDG_CONFIG_HOME"] = "/nonexistent"  # no operator's config file leaks in
        if self.token is not None:
            env["FERRY_TOKEN"] = self.token
        return env

    def __call__(self, *args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [FERRY, *args], env=self.env(), capture_output=True, text=True, timeout=60, check=False
        )
        if ok and result.returncode != 0:
            raise AssertionError(f"ferry {' '.join(args)} failed: {result.stderr}")
        return result

    def fails(self, *args: str, code: int = 1) -> str:
        """Run a command that must fail; return its single error line."""
        result = self(*args, ok=False)
        assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
        assert "Traceback" not in result.stderr
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        if code == 1:
            assert len(lines) == 1, result.stderr
        return result.stderr.strip()


def json_of(cli: Cli, *args: str) -> Any:
    """The JSON a command prints with `-f json`."""
    return json.loads(cli(*args, "-f", "json").stdout)


def rows(table: str) -> list[list[str]]:
    """A printed table as words per line."""
    return [line.split() for line in table.splitlines() if line.strip()]
