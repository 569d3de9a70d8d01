"""Authentication (bearer tokens), authorization by role, the bootstrap admin token, tokens API."""

from __future__ import annotations

import re
import stat
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from tests.api.conftest import Api, Launch, Token, registration

READ, OPERATE, TOKENS, REPORT = "read", "operate", "manage tokens", "report"
# Written out here rather than imported: roles are sets of permissions, not a ladder.
ROLE_PERMISSIONS = {
    "reader": {READ},
    "operator": {READ, OPERATE},
    "admin": {READ, OPERATE, TOKENS},
    "agent": {REPORT},
}
Setup = Callable[[Api], Awaitable[None]]


async def _admin_state(api: Api, wanted: str) -> None:
    if (await api.host("node-1"))["admin"]["state"] != wanted:
        await api.act("node-1", "enable" if wanted == "enabled" else "disable", {"reason": "setup"})


async def _maintenance(api: Api, in_service: bool) -> None:
    """In service, or all the way in maintenance: no drain may finish (and record events)
    while the roles are tried."""
    if ((await api.host("node-1"))["maintenance"]["state"] == "in_service") != in_service:
        action = "maintenance/exit" if in_service else "maintenance/enter"
        await api.act("node-1", action, {"reason": "setup"})
    wanted = "in_service" if in_service else "in_maintenance"

    async def settled() -> bool:
        return bool((await api.host("node-1"))["maintenance"]["state"] == wanted)

    await api.eventually(settled)


async def _victim_token(api: Api) -> None:
    if "victim" not in {t["name"] for t in await api.ok("GET", "/v1/tokens", api.admin)}:
        await api.create_token("reader", "victim")


@dataclass(frozen=True)
class Endpoint:
    method: str
    path: str
    permission: str
    body: dict[str, Any] | None = None
    status: int = 200
    records_event: bool = True
    # Brings the host (or tokens) into the state the call needs; run again before every role.
    setup: Setup | None = field(default=None)


HOST = "/v1/hosts/node-1"
ENDPOINTS = {
    "list hosts": Endpoint("GET", "/v1/hosts", READ, records_event=False),
    "show host": Endpoint("GET", HOST, READ, records_event=False),
    "status": Endpoint("GET", f"{HOST}/maintenance", READ, records_event=False),
    "list events": Endpoint("GET", "/v1/events", READ, records_event=False),
    "disable": Endpoint(
        "POST",
        f"{HOST}/disable",
        OPERATE,
        {"reason": "r"},
        setup=lambda a: _admin_state(a, "enabled"),
    ),
    "enable": Endpoint(
        "POST", f"{HOST}/enable", OPERATE, setup=lambda a: _admin_state(a, "disabled")
    ),
    "enter": Endpoint(
        "POST",
        f"{HOST}/maintenance/enter",
        OPERATE,
        {"reason": "r"},
        setup=lambda a: _maintenance(a, in_service=True),
    ),
    "dry run": Endpoint(
        "POST",
        f"{HOST}/maintenance/enter",
        OPERATE,
        {"reason": "r", "dry_run": True},
        records_event=False,
    ),
    "exit": Endpoint(
        "POST",
        f"{HOST}/maintenance/exit",
        OPERATE,
        setup=lambda a: _maintenance(a, in_service=False),
    ),
    "list tokens": Endpoint("GET", "/v1/tokens", TOKENS, records_event=False),
    "create token": Endpoint("POST", "/v1/tokens", TOKENS, {"name": "new", "role": "reader"}, 201),
    "revoke token": Endpoint("DELETE", "/v1/tokens/victim", TOKENS, setup=_victim_token),
    "register": Endpoint("POST", "/v1/agent/register", REPORT, registration("node-2")),
    "heartbeat": Endpoint("POST", "/v1/agent/hosts/node-1/heartbeat", REPORT, records_event=False),
}


@pytest.mark.parametrize("endpoint", list(ENDPOINTS))
async def test_role_permissions(api: Api, endpoint: str) -> None:
    """Every role against one endpoint; the roles allowed to call it come last (they change
    state), and the endpoint's setup restores its precondition before each role."""
    spec = ENDPOINTS[endpoint]
    assert (await api.register("node-1")).status_code == 200
    roles = sorted(ROLE_PERMISSIONS, key=lambda role: spec.permission in ROLE_PERMISSIONS[role])
    for role in roles:
        token = await api.token(role)
        if spec.setup:
            await spec.setup(api)
        before = await api.events()

        response = await api.call(spec.method, spec.path, token, json=spec.body)

        allowed = spec.permission in ROLE_PERMISSIONS[role]
        if allowed:
            assert response.status_code == spec.status, (role, response.text)
        else:
            assert response.status_code == 403, (role, response.text)
            assert response.json()["error"] == "forbidden"
            assert f"'{role}'" in response.json()["message"]
            assert token.name in response.json()["message"]
        recorded = await api.events() != before
        assert recorded == (allowed and spec.records_event), role


async def _unknown(_api: Api) -> dict[str, str]:
    return {"Authorization": "Bearer ferry_not-a-real-token"}


async def _revoked(api: Api) -> dict[str, str]:
    token = await api.create_token("admin", "short-lived")
    assert (await api.call("GET", "/v1/hosts", token)).status_code == 200
    await api.ok("DELETE", "/v1/tokens/short-lived", api.admin)
    return token.headers


async def _none(_api: Api) -> dict[str, str]:
    return {}


async def _basic(api: Api) -> dict[str, str]:
    return {"Authorization": f"Basic {api.admin.secret}"}


@pytest.mark.parametrize(
    "credentials",
    [
        pytest.param(_none, id="no token"),
        pytest.param(_unknown, id="unknown token"),
        pytest.param(_revoked, id="revoked token"),
        pytest.param(_basic, id="not a bearer token"),
    ],
)
async def test_unauthenticated(
    api: Api, credentials: Callable[[Api], Awaitable[dict[str, str]]]
) -> None:
    await api.register("node-1")
    headers = await credentials(api)
    before = await api.events()
    for spec in ENDPOINTS.values():
        response = await api.client.request(spec.method, spec.path, headers=headers, json=spec.body)
        assert response.status_code == 401, (spec.path, response.text)
        assert response.headers["WWW-Authenticate"] == "Bearer"
        assert response.json()["error"] == "unauthenticated"
        assert response.json()["message"]
    assert await api.events() == before


async def test_every_api_operation_but_health_demands_a_token(api: Api) -> None:
    """Every operation of the controller's own OpenAPI document (so a new router cannot be
    forgotten here) answers 401 without a token, whatever its path parameters and body."""
    await api.register("node-1")
    before = await api.events()
    document = (await api.client.get("/openapi.json")).json()
    tried = []
    for path, operations in document["paths"].items():
        if path == "/v1/health":
            continue
        url = re.sub(r"\{[^}]+\}", "node-1", path)
        for method in operations:
            response = await api.client.request(method.upper(), url, json={})
            assert response.status_code == 401, (method, path, response.text)
            assert response.json()["error"] == "unauthenticated"
            tried.append((method, path))
    assert len(tried) >= 40, tried
    assert ("get", "/v1/events/stream") in tried and ("get", "/v1/metrics") in tried
    assert await api.events() == before


async def test_a_reader_may_change_nothing(api: Api) -> None:
    """Every operation of the OpenAPI document that is not a GET (migrate, abort, instances,
    webhooks, tokens, maintenance, ...) refuses a reader with 403 and records nothing."""
    await api.register("node-1")
    reader = await api.token("reader")
    before = await api.events()
    document = (await api.client.get("/openapi.json")).json()
    tried = []
    for path, operations in document["paths"].items():
        url = re.sub(r"\{[^}]+\}", "node-1", path)
        for method in set(operations) - {"get"}:
            response = await api.call(method.upper(), url, reader, json={})
            assert response.status_code == 403, (method, path, response.text)
            assert "'reader'" in response.json()["message"]
            tried.append((method, path))
    assert ("post", "/v1/instances/{name}/migrate") in tried
    assert ("post", "/v1/migrations/{migration_id}/abort") in tried
    assert await api.events() == before


async def test_health_is_open(api: Api) -> None:
    response = await api.client.get("/v1/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "version": "0.1.0", "database": "ok"}


async def test_bootstrap_admin_token_file(api: Api, launch: Launch) -> None:
    token_file = api.controller.settings.admin_token_file
    info = token_file.stat()
    assert stat.S_IMODE(info.st_mode) == 0o600
    secret = token_file.read_text()
    assert secret.startswith("ferry_") and secret.endswith("\n")
    tokens = await api.ok("GET", "/v1/tokens", api.admin)
    assert [(t["name"], t["role"], t["created_by"]) for t in tokens] == [
        ("admin", "admin", "system")
    ]
    assert await api.kinds() == ["token.created"]


async def test_restart_does_not_create_another_admin_token(launch: Launch) -> None:
    async with launch() as first:
        token_file = first.controller.settings.admin_token_file
        before = token_file.stat()
        secret = token_file.read_text()
        await first.create_token("reader", "someone")
    async with launch() as second:
        after = token_file.stat()
        assert (after.st_ino, after.st_mtime_ns, after.st_size) == (
            before.st_ino,
            before.st_mtime_ns,
            before.st_size,
        )
        assert token_file.read_text() == secret
        tokens = await second.ok("GET", "/v1/tokens", second.admin)
        assert sorted(t["name"] for t in tokens) == ["admin", "someone"]
        assert await second.kinds(kind="token.created") == ["token.created"] * 2


async def test_secret_is_shown_only_on_create(api: Api) -> None:
    response = await api.call(
        "POST", "/v1/tokens", api.admin, json={"name": "ci", "role": "reader"}
    )
    assert response.status_code == 201
    created = response.json()
    assert created["secret"].startswith("ferry_")
    assert (created["name"], created["role"], created["created_by"]) == ("ci", "reader", "admin")
    assert created["revoked_at"] is None
    listing = await api.call("GET", "/v1/tokens", api.admin)
    assert created["secret"] not in listing.text
    assert api.admin.secret not in listing.text
    assert all("secret" not in item and "secret_sha256" not in item for item in listing.json())
    reader = Token("ci", created["secret"], "reader")
    assert (await api.call("GET", "/v1/hosts", reader)).status_code == 200


async def test_duplicate_token_name_conflicts(api: Api) -> None:
    await api.create_token("reader", "dup")
    response = await api.call(
        "POST", "/v1/tokens", api.admin, json={"name": "dup", "role": "admin"}
    )
    assert response.status_code == 409
    assert response.json()["error"] == "conflict"
    assert "'dup'" in response.json()["message"]


INVALID_TOKEN_BODIES: dict[str, dict[str, Any]] = {
    "space": {"name": "has space", "role": "reader"},
    "leading dash": {"name": "-dash", "role": "reader"},
    "empty": {"name": "", "role": "reader"},
    "too long": {"name": "x" * 65, "role": "reader"},
    "trailing newline": {"name": "ops\n", "role": "reader"},
    "bad role": {"name": "ops", "role": "root"},
    "role case": {"name": "ops", "role": "Admin"},
    "no role": {"name": "ops"},
    "extra field": {"name": "ops", "role": "reader", "expires": 3},
}


async def test_invalid_token_create(api: Api, subtests: pytest.Subtests) -> None:
    for case, body in INVALID_TOKEN_BODIES.items():
        with subtests.test(case):
            response = await api.call("POST", "/v1/tokens", api.admin, json=body)
            assert response.status_code == 422, response.text
            assert response.json()["error"] == "invalid_input"
            assert response.json()["message"]
    tokens = await api.ok("GET", "/v1/tokens", api.admin)
    assert [t["name"] for t in tokens] == ["admin"]


async def test_revoke(api: Api) -> None:
    token = await api.create_token("operator", "temp")
    assert (await api.call("GET", "/v1/hosts", token)).status_code == 200  # now remembered
    revoked = await api.ok("DELETE", "/v1/tokens/temp", api.admin)
    assert revoked["revoked_by"] == "admin" and revoked["revoked_at"] is not None
    again = await api.call("DELETE", "/v1/tokens/temp", api.admin)
    assert again.status_code == 409
    assert again.json()["error"] == "conflict"
    assert (await api.call("GET", "/v1/hosts", token)).status_code == 401
    active = await api.ok("GET", "/v1/tokens", api.admin)
    assert [t["name"] for t in active] == ["admin"]
    everything = await api.ok("GET", "/v1/tokens", api.admin, params={"include_revoked": True})
    assert [t["name"] for t in everything] == ["admin", "temp"]


async def test_a_valid_token_is_remembered_between_requests(api: Api) -> None:
    """Authenticating is a query per request unless a valid token is remembered a few
    seconds: GET /v1/metrics itself runs no SQL, so back-to-back calls count none."""
    reader = await api.token("reader")
    await api.ok("GET", "/v1/metrics", reader)
    first = await api.ok("GET", "/v1/metrics", reader)
    second = await api.ok("GET", "/v1/metrics", reader)
    assert second["db_statements"] == first["db_statements"]


async def test_revoke_by_id(api: Api) -> None:
    await api.create_token("reader", "by-id")
    tokens = await api.ok("GET", "/v1/tokens", api.admin)
    token_id = next(t["id"] for t in tokens if t["name"] == "by-id")
    assert (await api.ok("DELETE", f"/v1/tokens/{token_id}", api.admin))["name"] == "by-id"


async def test_revoke_unknown_token(api: Api) -> None:
    response = await api.call("DELETE", "/v1/tokens/nobody", api.admin)
    assert response.status_code == 404
    assert response.json() == {"error": "not_found", "message": "no token named 'nobody'"}
