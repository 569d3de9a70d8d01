"""API tests: a controller app on a fresh database per test, its lifespan running, and a client.

Tests import `Api`, `Token` and `registration` from here for their annotations and bodies."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select

from ferry.api.app import create_app
from ferry.config import load_controller_settings
from ferry.controller.runtime import Controller
from ferry.db.models import Host, Instance
from ferry.orchestrator.loop import ReconcileLoop

T = TypeVar("T")
RECONCILE_INTERVAL = 0.05


@dataclass(frozen=True)
class Token:
    name: str
    secret: str
    role: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.secret}"}


def registration(name: str = "node-1", **changes: Any) -> dict[str, Any]:
    """A valid HostRegistration body; `changes` replace top-level fields."""
    body: dict[str, Any] = {
        "name": name,
        "management_address": "10.0.0.11",
        "migration_address": "192.168.10.11",
        "inventory": {"vcpus": 32, "ram_mb": 131072, "disk_gb": 1000, "reserved_vcpus": 2},
        "capabilities": {
            "cpu_model": "EPYC-Rome",
            "qemu_version": "8.2.2",
            "machine_type": "pc-q35-8.2",
            "networks": ["prod", "storage"],
        },
        "agent_version": "0.1.0",
    }
    body.update(changes)
    return body


class Api:
    """One running app and a client for it, with helpers speaking as one token or another."""

    def __init__(self, app: FastAPI, client: httpx.AsyncClient, state_dir: Path) -> None:
        self.app = app
        self.client = client
        secret = (state_dir / "admin.token").read_text().strip()
        self.admin = Token("admin", secret, "admin")
        self._by_role: dict[str, Token] = {"admin": self.admin}

    @property
    def controller(self) -> Controller:
        controller = self.app.state.controller
        assert isinstance(controller, Controller)
        return controller

    async def stop_loop(self, name: str) -> ReconcileLoop:
        """Stop the controller's reconcile loop `name` (its pass in progress ends first), for a
        test that runs its passes itself; the loop."""
        loop = next(loop for loop in self.controller.loops if loop.name == name)
        loop.stop()
        tasks = [t for t in self.controller._tasks if t.get_name() == name]
        await asyncio.wait_for(asyncio.gather(*tasks), 5)
        return loop

    async def call(
        self, method: str, url: str, token: Token | None, **kwargs: Any
    ) -> httpx.Response:
        headers = token.headers if token else {}
        return await self.client.request(method, url, headers=headers, **kwargs)

    async def ok(self, method: str, url: str, token: Token | None, **kwargs: Any) -> Any:
        """The JSON body of a call that must succeed."""
        response = await self.call(method, url, token, **kwargs)
        assert response.is_success, (response.status_code, response.text)
        return response.json()

    async def create_token(self, role: str, name: str | None = None) -> Token:
        name = name or f"{role}-{len(self._by_role)}"
        body = await self.ok("POST", "/v1/tokens", self.admin, json={"name": name, "role": role})
        assert body["name"] == name and body["role"] == role
        return Token(name, body["secret"], role)

    async def token(self, role: str) -> Token:
        """The token this test uses for `role`, created on first use and named '<role>-bot'."""
        if role not in self._by_role:
            self._by_role[role] = await self.create_token(role, f"{role}-bot")
        return self._by_role[role]

    async def register(
        self, name: str = "node-1", *, token: Token | None = None, **changes: Any
    ) -> httpx.Response:
        agent = token or await self.token("agent")
        return await self.call(
            "POST", "/v1/agent/register", agent, json=registration(name, **changes)
        )

    async def heartbeat(
        self, name: str = "node-1", *, token: Token | None = None
    ) -> httpx.Response:
        agent = token or await self.token("agent")
        return await self.call("POST", f"/v1/agent/hosts/{name}/heartbeat", agent)

    async def host(self, name: str = "node-1") -> dict[str, Any]:
        body: dict[str, Any] = await self.ok("GET", f"/v1/hosts/{name}", self.admin)
        return body

    async def act(self, name: str, action: str, body: dict[str, Any] | None = None) -> Any:
        """POST /v1/hosts/{name}/{action} as the operator; the response must be a success."""
        operator = await self.token("operator")
        return await self.ok("POST", f"/v1/hosts/{name}/{action}", operator, json=body)

    async def add_instance(self, host: str, name: str = "vm-1") -> None:
        """Put a running instance on `host`, straight into the database (there is no API yet)."""
        async with self.controller.db.writing() as session:
            host_id = await session.scalar(select(Host.id).where(Host.name == host))
            assert host_id is not None, host
            session.add(
                Instance(
                    name=name,
                    vcpus=2,
                    ram_mb=2048,
                    disk_gb=20,
                    image="cirros",
                    host_id=host_id,
                    state="running",
                )
            )

    async def events(self, **params: Any) -> list[dict[str, Any]]:
        """Matching events, oldest first."""
        page = await self.ok(
            "GET", "/v1/events", self.admin, params={"order": "asc", "limit": 1000, **params}
        )
        items: list[dict[str, Any]] = page["items"]
        return items

    async def kinds(self, **params: Any) -> list[str]:
        return [event["kind"] for event in await self.events(**params)]

    @staticmethod
    async def eventually(
        check: Callable[[], Awaitable[T | None]], within: float = 5.0, every: float = 0.02
    ) -> T:
        """The first truthy result of `check`, polled for up to `within` seconds."""
        for _attempt in range(max(1, round(within / every))):
            if result := await check():
                return result
            await asyncio.sleep(every)
        raise AssertionError(f"condition still false after {within}s")


Launch = Callable[[], AbstractAsyncContextManager[Api]]


@pytest.fixture
def heartbeat_interval() -> float:
    """Long enough that no host goes down during a test; liveness tests parametrize it small."""
    return 5.0


@pytest.fixture
def launch(tmp_path: Path, heartbeat_interval: float) -> Launch:
    """Starts the app on the test's state dir; call it again after exit to restart."""

    @asynccontextmanager
    async def start() -> AsyncIterator[Api]:
        settings = load_controller_settings(
            state_dir=tmp_path,
            heartbeat_interval=heartbeat_interval,
            reconcile_interval=RECONCILE_INTERVAL,
        )
        app = create_app(settings)
        transport = httpx.ASGITransport(app=app)
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(transport=transport, base_url="http://ferry.test") as client,
        ):
            yield Api(app, client, tmp_path)

    return start


@pytest.fixture
async def api(launch: Launch) -> AsyncIterator[Api]:
    async with launch() as running:
        yield running
