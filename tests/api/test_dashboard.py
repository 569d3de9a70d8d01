"""What the dashboard needs from the API: who the caller is, each host's capacity and what is
claimed on it, and the static files under /ui with their security headers."""

from __future__ import annotations

import re

import pytest

from ferry.api.dashboard import UI_DIR
from tests.api.conftest import Api

CAPS = {"cpu_model": "EPYC-Rome", "qemu_version": "8.2.2", "machine_type": "pc-q35-8.2"}


@pytest.mark.parametrize(
    ("role", "permissions"),
    [
        ("reader", ["read"]),
        ("operator", ["operate", "read"]),
        ("admin", ["manage tokens", "operate", "read"]),
        ("agent", ["report as an agent"]),
    ],
)
async def test_whoami_names_the_token_its_role_and_permissions(
    api: Api, role: str, permissions: list[str]
) -> None:
    token = await api.create_token(role, f"{role}-1")
    before = await api.events()
    body = {"name": f"{role}-1", "role": role, "permissions": permissions}
    assert await api.ok("GET", "/v1/whoami", token) == body
    assert await api.events() == before


async def test_whoami_needs_a_valid_token(api: Api) -> None:
    for headers in ({}, {"Authorization": "Bearer ferry_not-a-real-token"}):
        response = await api.client.get("/v1/whoami", headers=headers)
        assert response.status_code == 401, response.text
        assert response.json()["error"] == "unauthenticated"
        assert response.headers["WWW-Authenticate"] == "Bearer"


async def test_whoami_refuses_a_revoked_token(api: Api) -> None:
    token = await api.create_token("operator", "gone")
    await api.ok("DELETE", "/v1/tokens/gone", api.admin)
    assert (await api.call("GET", "/v1/whoami", token)).status_code == 401


async def test_hosts_show_capacity_and_what_is_claimed(api: Api) -> None:
    inventory = {
        "vcpus": 8,
        "ram_mb": 8192,
        "disk_gb": 100,
        "cpu_allocation_ratio": 2.0,
        "reserved_vcpus": 2,
        "reserved_ram_mb": 1024,
    }
    caps = {**CAPS, "networks": ["lab"]}
    response = await api.register("node-1", inventory=inventory, capabilities=caps)
    assert response.status_code == 200, response.text
    operator = await api.token("operator")
    flavor = {"name": "m1", "vcpus": 2, "ram_mb": 1536, "disk_gb": 10}
    await api.ok("POST", "/v1/flavors", operator, json=flavor)
    await api.ok("POST", "/v1/networks", operator, json={"name": "lab", "cidr": "10.9.0.0/24"})
    empty = await api.host("node-1")
    assert empty["capacity"] == {"vcpus": 12, "ram_mb": 7168, "disk_gb": 100}
    assert (empty["used"], empty["instances"]) == ({"vcpus": 0, "ram_mb": 0, "disk_gb": 0}, 0)

    for name in ("vm-1", "vm-2"):
        body = {"name": name, "flavor": "m1", "network": "lab"}
        await api.ok("POST", "/v1/instances", operator, json=body)

    listed = await api.ok("GET", "/v1/hosts", api.admin)
    assert [(h["name"], h["used"], h["instances"]) for h in listed] == [
        ("node-1", {"vcpus": 4, "ram_mb": 3072, "disk_gb": 20}, 2)
    ]
    assert (await api.host("node-1"))["used"] == listed[0]["used"]


async def test_the_dashboard_is_served_under_ui(api: Api) -> None:
    root = await api.client.get("/")
    assert root.status_code == 307 and root.headers["location"] == "/ui/"
    page = await api.client.get("/ui/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert '<script type="module" src="js/app.js">' in page.text
    policy = page.headers["content-security-policy"]
    assert "script-src 'self'" in policy and "connect-src 'self'" in policy
    assert "frame-ancestors 'none'" in policy
    assert page.headers["x-content-type-options"] == "nosniff"
    script = await api.client.get("/ui/js/app.js")
    assert script.status_code == 200
    assert "javascript" in script.headers["content-type"]
    assert (await api.client.get("/ui/js/nothing.js")).status_code == 404
    assert "/ui" not in (await api.client.get("/openapi.json")).text


def test_every_module_the_dashboard_imports_exists() -> None:
    """No build step: the browser loads these files as they are, so a broken relative import
    would only show in a browser. Also no file reaches outside the controller (offline)."""
    modules = sorted((UI_DIR / "js").glob("*.js"))
    assert modules
    for module in [*modules, UI_DIR / "index.html", UI_DIR / "style.css"]:
        text = module.read_text()
        for target in re.findall(r"""from\s+["'](\.[^"']+)["']""", text):
            assert (module.parent / target).is_file(), (module.name, target)
        assert not re.search(r"https?://", text), module.name
