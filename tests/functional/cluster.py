"""A controller over HTTPS and agents over mutual TLS, as real processes on 127.0.0.1."""

from __future__ import annotations

import os
import signal
import ssl
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from ferry.faults.cluster import AgentFiles, agent_toml, controller_argv, controller_env
from ferry.pki.ca import IssuedCert, init_ca, issue
from tests.cli.live import FERRY, free_port


def wait_until(check: Any, timeout: float = 30.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


@dataclass
class Process:
    argv: list[str]
    log: Path
    env: dict[str, str] = field(default_factory=dict)
    popen: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as log:
            self.popen = subprocess.Popen(
                self.argv, env={**os.environ, **self.env}, stdout=log, stderr=log
            )

    def stop(self, sig: signal.Signals = signal.SIGTERM) -> None:
        if self.popen is not None and self.popen.poll() is None:
            self.popen.send_signal(sig)
            try:
                self.popen.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        self.popen = None


@dataclass
class TlsCluster:
    root: Path
    processes: list[Process] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.pki = self.root / "pki"
        init_ca(self.pki)
        self.controller_cert = issue(self.pki, "controller", ips=["127.0.0.1"], kind="controller")
        self.port = free_port()
        self.url = f"https://127.0.0.1:{self.port}"

    def client_tls(self, who: IssuedCert | None = None) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self.pki / "ca-cert.pem"))
        if who is not None:
            context.load_cert_chain(str(who.cert), str(who.key))
        return context

    def start_controller(self) -> Process:
        proc = Process(
            controller_argv(self.root / "state", self.port),
            self.root / "controller.log",
            controller_env(self.controller_cert),
        )
        proc.start()
        self.processes.append(proc)
        wait_until(self._healthy, what="controller health")
        return proc

    def _healthy(self) -> bool:
        try:
            return httpx.get(f"{self.url}/v1/health", verify=self.client_tls()).status_code == 200
        except httpx.TransportError:
            return False

    @property
    def admin(self) -> str:
        return (self.root / "state" / "admin.token").read_text().strip()

    def api(self, method: str, path: str, **kwargs: Any) -> Any:
        response = httpx.request(
            method,
            f"{self.url}{path}",
            verify=self.client_tls(),
            headers={"Authorization": f"Bearer {self.admin}"},
            timeout=30,
            **kwargs,
        )
        assert response.is_success, (response.status_code, response.text)
        return response.json() if response.content else None

    def agent_config(self, name: str, driver: str = "fake", **extra: str) -> Path:
        host = issue(self.pki, name, ips=["127.0.0.1"])
        token = self.api("POST", "/v1/tokens", json={"name": f"agent-{name}", "role": "agent"})
        token_file = self.root / f"{name}.token"
        token_file.write_text(token["secret"])
        files = AgentFiles(
            name,
            free_port(),
            self.url,
            token_file,
            self.root / name,
            host,
            self.controller_cert.cert,
        )
        config = self.root / f"{name}.toml"
        config.write_text(agent_toml(files, driver, extra=extra))
        return config

    def start_agent(self, config: Path) -> Process:
        proc = Process(
            [FERRY, "agent", "serve", "--config", str(config), "--log-level", "warning"],
            config.with_suffix(".log"),
        )
        proc.start()
        self.processes.append(proc)
        return proc

    def stop_all(self) -> None:
        for proc in reversed(self.processes):
            proc.stop()


@contextmanager
def started(root: Path) -> Iterator[TlsCluster]:
    """A cluster in `root` with its controller running; every process it started is stopped
    after, whatever happened."""
    running = TlsCluster(root)
    running.start_controller()
    try:
        yield running
    finally:
        running.stop_all()
