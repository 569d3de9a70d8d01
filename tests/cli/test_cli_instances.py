"""`ferry flavor|network|instance ...` against a live controller. Its hosts have no agent API,
so instances stay 'building' and a deletion completes by the controller's reconcile loop."""

from __future__ import annotations

from tests.cli.live import Cli, json_of, rows

HEARTBEAT_INTERVAL = 120  # hosts registered once stay up: nothing heartbeats for them here


def _catalog(cli: Cli) -> None:
    cli("flavor", "create", "m1", "--vcpus", "2", "--ram-mb", "1024", "--disk-gb", "5")
    cli("network", "create", "default", "--cidr", "198.19.0.0/24", "--gateway", "198.19.0.1")


def test_flavor_create_list_and_errors(cli: Cli, hosts: list[str]) -> None:
    assert cli("flavor", "list").stdout.strip() == "no flavors"
    made = cli("flavor", "create", "m1", "--vcpus", "2", "--ram-mb", "1024")
    assert made.stdout.strip() == "flavor m1 created"
    small = json_of(cli, "flavor", "create", "a0")
    assert small == {"name": "a0", "vcpus": 1, "ram_mb": 128, "disk_gb": 0}
    listed = rows(cli("flavor", "list").stdout)
    assert listed[0] == ["NAME", "VCPUS", "RAM", "MiB", "DISK", "GiB"]
    assert listed[1:] == [["a0", "1", "128", "0"], ["m1", "2", "1024", "0"]]
    assert [f["name"] for f in json_of(cli, "flavor", "list")] == ["a0", "m1"]
    duplicate = cli.fails("flavor", "create", "m1")
    assert "a flavor named 'm1' exists already (HTTP 409)" in duplicate
    assert "HTTP 422" in cli.fails("flavor", "create", "Big_One")
    assert "no flavor named 'xl' (HTTP 404)" in cli.fails("flavor", "delete", "xl")
    assert "no network named 'dmz' (HTTP 404)" in cli.fails("network", "delete", "dmz")


def test_flavor_and_network_delete(cli: Cli, hosts: list[str]) -> None:
    _catalog(cli)
    assert cli("flavor", "delete", "m1").stdout.strip() == "flavor m1 deleted"
    assert cli("network", "delete", "default").stdout.strip() == "network default deleted"
    assert json_of(cli, "flavor", "list") == [] and json_of(cli, "network", "list") == []


def test_network_create_list_and_validation(cli: Cli, hosts: list[str]) -> None:
    assert cli("network", "list").stdout.strip() == "no networks"
    made = cli("network", "create", "default", "--cidr", "198.19.0.0/24", "--gateway", "198.19.0.1")
    assert made.stdout.strip() == "network default created"
    other = json_of(cli, "network", "create", "spare", "--cidr", "10.7.0.0/30",
                    "--allocation-start", "10.7.0.2")  # fmt: skip
    assert other == {
        "name": "spare",
        "cidr": "10.7.0.0/30",
        "gateway": None,
        "allocation_start": "10.7.0.2",
        "allocation_end": None,
    }
    assert rows(cli("network", "list").stdout) == [
        ["NAME", "RANGE", "GATEWAY", "ALLOCATION"],
        ["default", "198.19.0.0/24", "198.19.0.1", "all"],
        ["spare", "10.7.0.0/30", "-", "10.7.0.2-last"],
    ]
    reversed_range = cli.fails(
        "network", "create", "r", "--cidr", "10.6.0.0/24",
        "--allocation-start", "10.6.0.9", "--allocation-end", "10.6.0.3",
    )  # fmt: skip
    assert "allocation_start 10.6.0.9 is after allocation_end 10.6.0.3 (HTTP 422)" in reversed_range
    bad = cli.fails("network", "create", "broken", "--cidr", "198.19.0.0/33")
    assert bad.startswith("error: invalid network range '198.19.0.0/33'") and "HTTP 422" in bad
    outside = cli.fails("network", "create", "x", "--cidr", "10.8.0.0/24", "--gateway", "10.9.0.1")
    assert "gateway 10.9.0.1 is not a host address of 10.8.0.0/24 (HTTP 422)" in outside
    assert [n["name"] for n in json_of(cli, "network", "list")] == ["default", "spare"]


def test_instance_create_list_show_delete(cli: Cli, hosts: list[str]) -> None:
    _catalog(cli)
    vm1 = json_of(cli, "instance", "create", "vm1", "--flavor", "m1")
    assert vm1["host"] in hosts and vm1["state"] == "building"
    assert (vm1["vcpus"], vm1["ram_mb"], vm1["created_by"]) == (2, 1024, "admin")
    port = vm1["ports"][0]
    assert (port["network"], port["ip"]) == ("default", "198.19.0.2")
    assert port["mac"].startswith("52:54:00:")
    pinned = cli("instance", "create", "vm2", "--flavor", "m1", "--host", "host1").stdout
    assert pinned.strip() == "instance vm2 building on host1 with 198.19.0.3"
    vm3 = json_of(cli, "instance", "create", "vm3", "--flavor", "m1")
    assert vm3["host"] not in (vm1["host"], "host1")  # the emptiest host: load spreads

    listed = rows(cli("instance", "list").stdout)
    assert listed[0] == ["NAME", "STATE", "HOST", "FLAVOR", "IP", "ERROR"]
    assert listed[1:] == [
        ["vm1", "building", vm1["host"], "m1", "198.19.0.2"],
        ["vm2", "building", "host1", "m1", "198.19.0.3"],
        ["vm3", "building", vm3["host"], "m1", "198.19.0.4"],
    ]
    assert [i["name"] for i in json_of(cli, "instance", "list", "--host", vm3["host"])] == ["vm3"]
    shown = dict(line.split(None, 1) for line in cli("instance", "show", "vm1").stdout.splitlines())
    assert shown["id"] == vm1["id"] and shown["state"] == "building"
    assert shown["flavor"] == "m1 (2 vCPU, 1024 MiB)"
    assert shown["ports"] == f"default 198.19.0.2 {port['mac']}"
    assert shown["created"].endswith("by admin")
    assert json_of(cli, "instance", "show", vm1["id"])["name"] == "vm1"

    gone = cli("instance", "delete", "vm1", "--wait", "--timeout", "20")
    assert gone.stdout.strip() == "instance vm1 deleted"
    assert [i["name"] for i in json_of(cli, "instance", "list")] == ["vm2", "vm3"]
    assert "no instance named 'vm1' (HTTP 404)" in cli.fails("instance", "show", "vm1")
    vm4 = json_of(cli, "instance", "create", "vm4", "--flavor", "m1")
    assert vm4["ports"][0]["ip"] == "198.19.0.2"  # vm1's address was released


def test_instance_create_refusals(cli: Cli, hosts: list[str]) -> None:
    _catalog(cli)
    unknown = cli.fails("instance", "create", "vm1", "--flavor", "xl")
    assert unknown == "error: no flavor named 'xl' (HTTP 404)"
    assert "no network named 'dmz'" in cli.fails(
        "instance", "create", "vm1", "--flavor", "m1", "--network", "dmz"
    )
    cli("host", "disable", "host2", "--reason", "flaky NIC")
    pinned = cli.fails("instance", "create", "vm1", "--flavor", "m1", "--host", "host2")
    assert "cannot place the instance on host host2" in pinned and "host disabled: 1" in pinned
    cli("flavor", "create", "huge", "--ram-mb", "65536")
    huge = cli.fails("instance", "create", "vm1", "--flavor", "huge")
    assert "no valid host among 3 (host disabled: 1, not enough free" in huge
    assert "(HTTP 409)" in huge
    assert cli("instance", "list").stdout.strip() == "no instances"
