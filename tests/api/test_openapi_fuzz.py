"""API v1 against its own OpenAPI document, with generated requests (schemathesis).

The controller app that `ferry controller serve` runs is served by uvicorn on a loopback port in
this process and seeded with objects of every kind. Then every operation of its GET /openapi.json
is called with generated input, valid and invalid: the boundary cases of each parameter and body
field (schemathesis' coverage phase), then random examples. Each answer must be documented: no
5xx, a documented status code and content type, a body (or each Server-Sent Event) matching its
schema, invalid input refused with a 4xx, and no operation working without a valid token.

Requests carry the admin token, or the agent token for the agents' operations. In the random
phase, path parameters name a seeded object about half the time, so operations on existing
objects run too, not only 404s. Two things differ from production, for the test's sake only:
webhook deliveries go to an in-process receiver (generated URLs are never contacted), and the
controller closes each event stream after STREAM_SECONDS.

FERRY_FUZZ_EXAMPLES sets the random examples per operation (default 10: about a minute on two
cores; try 200 for a long run). Generation is derandomized with a fixed seed, so every run sends
the same requests. The variable is read at import, before the suite's fixtures drop every FERRY_*
variable from the environment.

Checks left out: `positive_data_acceptance`, because a schema-valid request may still be refused
with 422 by rules that JSON Schema cannot state (names of a-z, 0-9 and '-', a CIDR that parses, a
reason of printable characters, a known policy key); stateful checks (`use_after_free`,
`ensure_resource_availability`), because the stateful phase needs OpenAPI links, which the
document does not declare; `max_response_time`, because timing on a shared CI machine is noise.
"""

from __future__ import annotations

import asyncio
import os
import socket
import threading
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
import uvicorn
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from schemathesis import Case, HookContext
from schemathesis.checks import not_a_server_error
from schemathesis.config import SchemathesisConfig
from schemathesis.core.parameters import ParameterLocation
from schemathesis.specs.openapi.checks import (
    allow_header_conformance,
    content_type_conformance,
    ignored_auth,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
    unsupported_method,
)

from ferry.api.app import create_app
from ferry.config import ControllerSettings, load_controller_settings
from ferry.orchestrator import webhooks as webhook_loop
from ferry.services import webhooks as webhook_service

EXAMPLES = int(os.environ.get("FERRY_FUZZ_EXAMPLES", "10"))
SEED = 20240607

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
    negative_data_rejection,
    ignored_auth,  # without a token, and with a wrong one: 401
    unsupported_method,  # a method the path does not take: 405 with `Allow`
    allow_header_conformance,  # and `Allow` lists the path's methods in the document
]

HOSTS = ["node-1", "node-2", "node-3", "node-4"]
AGENT_TOKEN = "agent-1"

# Seeded objects a path parameter may name, by the path up to the parameter. Deletions name
# objects of their own, or ones in use (a network with ports, a group with members: refused),
# so that the operations after them still find the others. Migration ids: once seeded.
EXISTING: dict[str, list[str]] = {
    "/v1/hosts/": HOSTS,
    "/v1/agent/hosts/": HOSTS,
    "/v1/flavors/": ["m1", "spare"],
    "/v1/networks/": ["prod", "spare"],
    "/v1/instances/": ["vm-1", "vm-2", "vm-3"],
    "DELETE /v1/instances/": ["spare"],
    "/v1/server-groups/": ["web", "spare"],
    "/v1/tokens/": ["reader-1"],
    "/v1/webhooks/": ["ops"],
    "DELETE /v1/webhooks/": ["spare"],
    "/v1/migrations/": [],
    "/v1/images/": ["base", "spare"],  # vm-3 is made from base: its deletion is refused
    "/v1/agent/images/": [],  # image ids: once seeded
}


@dataclass(frozen=True)
class Served:
    url: str
    admin: str
    agent: str

    def headers(self, case: Case[Any]) -> dict[str, str]:
        """The token the operation is meant for: agents report, the admin does the rest."""
        token = self.agent if case.path.startswith("/v1/agent/") else self.admin
        return {"Authorization": f"Bearer {token}"}


def _receiver(_request: httpx.Request) -> httpx.Response:
    """Every webhook delivery and test ping ends here: generated URLs never leave the process."""
    return httpx.Response(204)


def _webhook_client(timeout: float) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.MockTransport(_receiver), timeout=timeout)


STREAM_SECONDS = 0.1


def _brief(tail: Callable[..., AsyncGenerator[Any]]) -> Callable[..., AsyncIterator[Any]]:
    """The event log's tail, ending after STREAM_SECONDS: a stream the controller closes lets
    every request keep a generous timeout, where a stream that never ends would hold each one
    until the client's timeout (and a short timeout fails on a busy machine)."""

    async def brief(*args: Any, **kwargs: Any) -> AsyncIterator[Any]:
        source = tail(*args, **kwargs)
        try:
            async with asyncio.timeout(STREAM_SECONDS):
                async for event in source:
                    yield event
        except TimeoutError:
            return
        finally:
            await source.aclose()

    return brief


def _registration(name: str, address: str) -> dict[str, Any]:
    return {
        "name": name,
        "management_address": address,
        "migration_address": address,
        "inventory": {"vcpus": 32, "ram_mb": 131072, "disk_gb": 1000},
        "capabilities": {
            "cpu_model": "EPYC-Rome",
            "qemu_version": "8.2.2",
            "machine_type": "pc-q35-8.2",
            "networks": ["prod"],
        },
        "agent_version": "0.1.0",
    }


def _seed(url: str, admin: str) -> str:
    """Objects of every kind, running instances and a migration; returns the agent token."""
    with httpx.Client(base_url=url, timeout=10) as http:

        def call(method: str, path: str, token: str, body: Any = None) -> Any:
            headers = {"Authorization": f"Bearer {token}"}
            response = http.request(method, path, json=body, headers=headers)
            assert response.is_success, (method, path, response.status_code, response.text)
            return response.json() if response.content else None

        agent = call("POST", "/v1/tokens", admin, {"name": AGENT_TOKEN, "role": "agent"})["secret"]
        call("POST", "/v1/tokens", admin, {"name": "reader-1", "role": "reader"})
        for index, name in enumerate(HOSTS, start=11):
            call("POST", "/v1/agent/register", agent, _registration(name, f"10.0.0.{index}"))
        for name in ("m1", "spare"):
            call("POST", "/v1/flavors", admin, {"name": name, "vcpus": 2, "ram_mb": 2048})
        for name, cidr in (("prod", "10.9.0.0/24"), ("spare", "10.8.0.0/24")):
            call("POST", "/v1/networks", admin, {"name": name, "cidr": cidr})
        for name in ("web", "spare"):
            call("POST", "/v1/server-groups", admin, {"name": name, "policy": "anti-affinity"})
        for name in ("base", "spare"):
            response = http.post(
                "/v1/images",
                params={"name": name, "format": "raw"},
                content=bytes(65536),
                headers={"Authorization": f"Bearer {admin}"},
            )
            assert response.status_code == 201, response.text
            EXISTING["/v1/agent/images/"].append(response.json()["id"])
        running: dict[str, list[dict[str, Any]]] = {host: [] for host in HOSTS}
        seeded = (("vm-1", "web", None), ("vm-2", "web", None), ("vm-3", None, "base"))
        for name, group, image in (*seeded, ("spare", None, None)):
            body = {"name": name, "flavor": "m1", "network": "prod", "group": group, "image": image}
            created = call("POST", "/v1/instances", admin, body)
            running[created["host"]].append({"id": created["id"], "name": name, "power": "running"})
        for host, guests in running.items():  # what the agents report: the instances run
            call("POST", f"/v1/agent/hosts/{host}/heartbeat", agent, {"guests": guests})
        migration = call("POST", "/v1/instances/vm-1/migrate", admin, {})
        EXISTING["/v1/migrations/"].append(migration["id"])
        call("POST", "/v1/hosts/node-4/disable", admin, {"reason": "fan replaced"})
        for name in ("ops", "spare"):
            call("POST", "/v1/webhooks", admin, {"name": name, "url": f"https://{name}.test/"})
        return str(agent)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    state_dir = tmp_path_factory.mktemp("controller")
    settings = load_controller_settings(
        state_dir=state_dir, heartbeat_interval=3600, reconcile_interval=0.05
    )
    app = create_app(settings)
    events = app.state.controller.events
    server = uvicorn.Server(
        uvicorn.Config(app, lifespan="on", log_level="warning", access_log=False)
    )
    with pytest.MonkeyPatch.context() as patch, socket.socket() as sock:
        patch.setattr(webhook_service, "client", _webhook_client)
        patch.setattr(webhook_loop, "client", _webhook_client)
        patch.setattr(events, "tail", _brief(events.tail))
        sock.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
        thread.start()
        try:
            deadline = time.monotonic() + 30
            while not server.started:
                assert thread.is_alive(), "the controller stopped while starting"
                assert time.monotonic() < deadline, "the controller did not start in 30s"
                time.sleep(0.02)
            admin = (state_dir / "admin.token").read_text().strip()
            yield Served(url, admin, _seed(url, admin))
        finally:
            server.should_exit = True
            thread.join(timeout=30)


def _openapi_document() -> dict[str, Any]:
    """GET /openapi.json of a controller app whose lifespan never starts (nothing is stored).

    The document must be known when tests are collected, before any fixture runs;
    `test_fuzzed_document_is_the_served_one` checks that the served controller answers the same.
    """

    async def get() -> httpx.Response:
        settings = ControllerSettings(
            state_dir=Path("/nonexistent"), database_url="sqlite+aiosqlite://"
        )
        transport = httpx.ASGITransport(app=create_app(settings))
        async with httpx.AsyncClient(transport=transport, base_url="http://ferry.test") as http:
            return await http.get("/openapi.json")

    response = asyncio.run(get())
    assert response.status_code == 200, response.text
    document: dict[str, Any] = response.json()
    return document


schema = schemathesis.openapi.from_dict(
    _openapi_document(),
    config=SchemathesisConfig.from_dict(
        {
            "seed": SEED,
            "generation": {
                "deterministic": True,
                "database": "none",
                "max-examples": EXAMPLES,
                # Requests carry a valid token (Served.headers) rather than generated ones;
                # `ignored_auth` tries each operation without it and with a wrong one.
                "with-security-parameters": False,
            },
            # A stream (closed by the controller after STREAM_SECONDS) is read up to two events.
            "max-stream-events": 2,
            "phases": {
                # A method no path takes shows the 405s; OPTIONS, their `Allow`.
                "coverage": {"unexpected-methods": ["patch", "options"]},
                "stateful": {"enabled": False},
            },
        }
    ),
)


def _existing(case: Case[Any]) -> list[str]:
    prefix = case.path.split("{", 1)[0]
    return EXISTING.get(f"{case.method.upper()} {prefix}", EXISTING.get(prefix, []))


@schema.hook
def flatmap_case(_ctx: HookContext, case: Case[Any]) -> st.SearchStrategy[Case[Any]]:
    """About half the random cases name a seeded object in the path (never when the path is
    the invalid part of the case: schemathesis then expects a refusal)."""
    names = _existing(case)
    param = next(iter(case.path_parameters), None)
    meta = case.meta
    if not names or param is None or (meta and meta.is_negative_at(ParameterLocation.PATH)):
        return st.just(case)

    def named(name: str) -> Case[Any]:
        case.path_parameters = {**case.path_parameters, param: name}
        return case

    return st.sampled_from(names).map(named) | st.just(case)


@schema.hook
def filter_query(_ctx: HookContext, query: dict[str, Any] | None) -> bool:
    """Keeps the event filters' `kind` only as a list of strings (or absent): nothing else can
    be sent. A query string carries text, and `kind=x` is a list of one string, so whatever is
    generated as an invalid `kind` (a bare string, a number, a boolean, an object) arrives as a
    valid one. Schemathesis allows for that with scalar parameters, not with this array of
    strings, and would blame the server for accepting it. Valid kinds are generated as lists of
    strings, so none of them is dropped."""
    kinds = (query or {}).get("kind")
    return kinds is None or (isinstance(kinds, list) and all(isinstance(k, str) for k in kinds))


def test_fuzzed_document_is_the_served_one(served: Served) -> None:
    served_document = httpx.get(f"{served.url}/openapi.json", timeout=10).json()
    assert served_document == schema.raw_schema


def test_seeded_objects_exist(served: Served) -> None:
    """What the path parameters may name exists, and the instances run."""
    headers = {"Authorization": f"Bearer {served.admin}"}
    for prefix in ("/v1/hosts/", "/v1/instances/", "/v1/server-groups/", "/v1/migrations/"):
        for name in EXISTING[prefix]:
            response = httpx.get(f"{served.url}{prefix}{name}", headers=headers, timeout=10)
            assert response.status_code == 200, (prefix, name, response.text)
    instances = httpx.get(f"{served.url}/v1/instances", headers=headers, timeout=10).json()
    assert {i["state"] for i in instances} == {"running"}


@schema.parametrize()
@settings(
    max_examples=EXAMPLES,
    derandomize=True,
    deadline=None,
    database=None,
    # Requests over a socket are slow for Hypothesis' taste, and the hooks filter some cases.
    suppress_health_check=list(HealthCheck),
)
def test_api_conforms_to_its_openapi(case: Case[Any], served: Served) -> None:
    if case.path == "/v1/tokens/{name}" and case.path_parameters.get("name") in (
        "admin",
        AGENT_TOKEN,
    ):
        return  # revoking the run's own tokens would leave every later operation at 401
    case.call_and_validate(base_url=served.url, headers=served.headers(case), checks=CHECKS)
