"""`ferry server-group ...` and `ferry instance create --group` against a live controller."""

from __future__ import annotations

from tests.cli.live import Cli, LiveController, json_of, rows

HEARTBEAT_INTERVAL = 120  # hosts registered once stay up: nothing heartbeats for them here

POLICIES = "affinity, anti-affinity, soft-affinity, soft-anti-affinity"


def _catalog(cli: Cli) -> None:
    cli("flavor", "create", "m1", "--vcpus", "2", "--ram-mb", "1024", "--disk-gb", "5")
    cli("network", "create", "default", "--cidr", "198.19.0.0/24", "--gateway", "198.19.0.1")


def test_create_list_show_delete(cli: Cli, hosts: list[str]) -> None:
    assert cli("server-group", "list").stdout.strip() == "no server groups"
    made = cli("server-group", "create", "web", "--policy", "anti-affinity")
    assert made.stdout.strip() == "server group web created (anti-affinity)"
    db = json_of(cli, "server-group", "create", "db", "--policy", "affinity")
    assert (db["name"], db["policy"], db["members"], db["created_by"]) == (
        "db",
        "affinity",
        [],
        "admin",
    )
    _catalog(cli)
    joined = cli("instance", "create", "vm1", "--flavor", "m1", "--group", "web").stdout.strip()
    vm1 = json_of(cli, "instance", "show", "vm1")
    assert joined == f"instance vm1 building on {vm1['host']} with 198.19.0.2 in server group web"
    vm2 = json_of(cli, "instance", "create", "vm2", "--flavor", "m1", "--group", "web")
    assert (vm1["server_group"], vm2["server_group"]) == ("web", "web")
    # The emptiest host would be chosen anyway; pinning vm3 to vm1's host shows the rule holds.
    pinned = cli.fails(
        "instance", "create", "vm3", "--flavor", "m1", "--group", "web", "--host", vm1["host"]
    )
    assert "server-group anti-affinity: 1" in pinned and "(HTTP 409)" in pinned
    assert vm2["host"] != vm1["host"]

    assert rows(cli("server-group", "list").stdout) == [
        ["NAME", "POLICY", "MEMBERS", "INSTANCES"],
        ["db", "affinity", "0", "-"],
        ["web", "anti-affinity", "2", f"vm1@{vm1['host']},", f"vm2@{vm2['host']}"],
    ]
    listed = json_of(cli, "server-group", "list")
    assert [(g["name"], [m["name"] for m in g["members"]]) for g in listed] == [
        ("db", []),
        ("web", ["vm1", "vm2"]),
    ]
    lines = cli("server-group", "show", "web").stdout.splitlines()
    head = dict(line.split(None, 1) for line in lines[:4])
    assert (head["name"], head["policy"], head["members"]) == ("web", "anti-affinity", "2")
    assert head["created"].endswith("by admin")
    assert rows("\n".join(lines[4:])) == [
        ["INSTANCE", "HOST", "STATE"],
        ["vm1", vm1["host"], "building"],
        ["vm2", vm2["host"], "building"],
    ]
    shown = json_of(cli, "server-group", "show", "web")
    assert [(m["name"], m["host"]) for m in shown["members"]] == [
        ("vm1", vm1["host"]),
        ("vm2", vm2["host"]),
    ]
    instance = dict(
        line.split(None, 1) for line in cli("instance", "show", "vm1").stdout.splitlines()
    )
    assert instance["group"] == "web"

    busy = cli.fails("server-group", "delete", "web")
    assert busy == "error: server group 'web' still has 2 instance(s): vm1, vm2 (HTTP 409)"
    assert cli("server-group", "delete", "db").stdout.strip() == "server group db deleted"
    assert "no server group named 'db' (HTTP 404)" in cli.fails("server-group", "show", "db")
    assert [g["name"] for g in json_of(cli, "server-group", "list")] == ["web"]
    cli("instance", "delete", "vm1", "--wait", "--timeout", "20")
    cli("instance", "delete", "vm2", "--wait", "--timeout", "20")
    assert cli("server-group", "delete", "web").stdout.strip() == "server group web deleted"
    assert cli("server-group", "list").stdout.strip() == "no server groups"


def test_refusals(cli: Cli, controller: LiveController, hosts: list[str]) -> None:
    bad = cli.fails("server-group", "create", "web", "--policy", "strict")
    assert bad == f"error: invalid server group policy 'strict': use one of {POLICIES} (HTTP 422)"
    assert "--policy" in cli.fails("server-group", "create", "web", code=2)
    assert "invalid server group name" in cli.fails(
        "server-group", "create", "Web_1", "--policy", "affinity"
    )
    cli("server-group", "create", "web", "--policy", "anti-affinity")
    duplicate = cli.fails("server-group", "create", "web", "--policy", "affinity")
    assert duplicate == "error: a server group named 'web' exists already (HTTP 409)"
    assert cli.fails("server-group", "delete", "ghost") == (
        "error: no server group named 'ghost' (HTTP 404)"
    )
    reader = Cli(controller.url, controller.token("viewer", "reader"))
    denied = reader.fails("server-group", "create", "db", "--policy", "affinity")
    assert "which may not operate (HTTP 403)" in denied
    assert [g["name"] for g in json_of(reader, "server-group", "list")] == ["web"]

    _catalog(cli)
    unknown = cli.fails("instance", "create", "vm1", "--flavor", "m1", "--group", "ghost")
    assert unknown == "error: no server group named 'ghost' (HTTP 404)"
    placed = [
        json_of(cli, "instance", "create", f"vm{n}", "--flavor", "m1", "--group", "web")["host"]
        for n in range(3)
    ]
    assert sorted(placed) == sorted(hosts)
    full = cli.fails("instance", "create", "vm3", "--flavor", "m1", "--group", "web")
    assert "no valid host among 3 (server-group anti-affinity: 3) (HTTP 409)" in full
    assert json_of(cli, "instance", "create", "vm3", "--flavor", "m1")["server_group"] is None
