"""Lab network plan: names and addresses (pure, no root), and the agent's tap naming."""

from __future__ import annotations

import ipaddress

import pytest

from ferry.agent.net import TAP_PREFIX, tap_mac, tap_name
from ferry.lab.net_plan import (
    HOST_INST_BRIDGE,
    HOST_INST_UPLINK,
    HOST_MGMT_IF,
    INST_NETWORK,
    LAB_RANGE,
    MAX_HOSTS,
    MGMT_NETWORK,
    LabNetPlan,
    LabPlanError,
    check_prefix,
    name_prefix,
    tbf_params,
)

LONGEST_PREFIX = "abcdefgh"


def _root_names(plan: LabNetPlan) -> list[str]:
    names = [plan.mgmt_bridge, plan.inst_bridge]
    for i in plan.host_indices:
        names += [plan.mgmt_root_veth(i), plan.inst_root_veth(i)]
    return names


@pytest.mark.parametrize("hosts", [1, 2, 500, MAX_HOSTS])
@pytest.mark.parametrize("prefix", ["fry", "ft0ab", LONGEST_PREFIX])
def test_interface_names_fit_ifnamsiz_and_are_unique(prefix: str, hosts: int) -> None:
    plan = LabNetPlan(prefix, hosts)
    names = [*_root_names(plan), HOST_MGMT_IF, HOST_INST_BRIDGE, HOST_INST_UPLINK]
    assert all(len(n) <= 15 for n in names), max(names, key=len)
    assert len(set(_root_names(plan))) == len(_root_names(plan))
    namespaces = [plan.host_ns(i) for i in plan.host_indices]
    assert len(set(namespaces)) == hosts


def test_every_name_carries_the_prefix() -> None:
    plan = LabNetPlan("fry", 3)
    for name in _root_names(plan) + [plan.host_ns(i) for i in plan.host_indices]:
        assert name.startswith("fry-")
    assert plan.host_ns(1) == "fry-h1"
    assert plan.mgmt_bridge == "fry-mgmt"
    assert plan.inst_bridge == "fry-inst"
    assert plan.mgmt_root_veth(2) == "fry-m2"
    assert plan.inst_root_veth(3) == "fry-i3"


@pytest.mark.parametrize("hosts", [2, 500, MAX_HOSTS])
def test_management_addresses_unique_and_in_range(hosts: int) -> None:
    plan = LabNetPlan("fry", hosts)
    addrs = [ipaddress.IPv4Address(plan.mgmt_ip(i)) for i in plan.host_indices]
    root = ipaddress.IPv4Address(plan.controller_ip)
    assert len(set(addrs)) == hosts
    assert root not in addrs
    for addr in [*addrs, root]:
        assert addr in MGMT_NETWORK
        assert addr in LAB_RANGE
        assert addr not in (MGMT_NETWORK.network_address, MGMT_NETWORK.broadcast_address)
    assert plan.mgmt_cidr(1) == f"{plan.mgmt_ip(1)}/{MGMT_NETWORK.prefixlen}"


def test_management_addresses_match_the_design() -> None:
    plan = LabNetPlan("fry", 500)
    assert plan.controller_ip == "198.18.0.1"
    assert plan.mgmt_ip(1) == "198.18.0.11"
    assert plan.mgmt_ip(2) == "198.18.0.12"
    assert plan.mgmt_ip(245) == "198.18.0.255"  # a host address: the network is a /16
    assert plan.mgmt_ip(500) == "198.18.1.254"


def test_management_and_instance_ranges_do_not_overlap() -> None:
    assert not MGMT_NETWORK.overlaps(INST_NETWORK)
    assert MGMT_NETWORK.subnet_of(LAB_RANGE)
    assert INST_NETWORK.subnet_of(LAB_RANGE)
    plan = LabNetPlan("fry", MAX_HOSTS)
    instances = {LabNetPlan.instance_ip(n) for n in (0, 1, 1000, 65000)}
    assert plan.inst_root_ip == "198.19.0.1"
    assert LabNetPlan.instance_ip(0) == "198.19.1.1"
    for ip in [*instances, plan.inst_root_ip]:
        assert ipaddress.IPv4Address(ip) in INST_NETWORK
        assert ipaddress.IPv4Address(ip) not in MGMT_NETWORK
    mgmt = {plan.mgmt_ip(i) for i in plan.host_indices} | {plan.controller_ip}
    assert not mgmt & instances
    with pytest.raises(LabPlanError):
        LabNetPlan.instance_ip(-1)
    with pytest.raises(LabPlanError):
        LabNetPlan.instance_ip(65278)  # would be the broadcast address
    assert LabNetPlan.instance_ip(65277) == "198.19.255.254"


@pytest.mark.parametrize("prefix", ["", "f", "Fry", "fry-", "fr y", "1fry", "abcdefghi", "fry/"])
def test_bad_prefixes_are_refused(prefix: str) -> None:
    with pytest.raises(LabPlanError):
        check_prefix(prefix)
    with pytest.raises(LabPlanError):
        name_prefix(prefix)
    with pytest.raises(LabPlanError):
        LabNetPlan(prefix)


def test_name_prefix_ends_with_a_dash_so_labs_never_match_each_other() -> None:
    assert name_prefix("fry") == "fry-"
    other = LabNetPlan("fryx", 2)
    assert not any(n.startswith(name_prefix("fry")) for n in _root_names(other))


@pytest.mark.parametrize(
    ("hosts", "link_mbit"), [(0, None), (MAX_HOSTS + 1, None), (2, 0), (2, 40_000)]
)
def test_bad_sizes_are_refused(hosts: int, link_mbit: int | None) -> None:
    with pytest.raises(LabPlanError):
        LabNetPlan("fry", hosts, link_mbit)


def test_host_index_is_checked() -> None:
    plan = LabNetPlan("fry", 2)
    for bad in (0, 3, -1):
        with pytest.raises(LabPlanError):
            plan.host_ns(bad)
        with pytest.raises(LabPlanError):
            plan.mgmt_ip(bad)


def test_tbf_parameters() -> None:
    assert LabNetPlan("fry", 2).tbf is None
    tbf = LabNetPlan("fry", 2, 100).tbf
    assert tbf is not None
    assert tbf.rate_bytes == 12_500_000
    assert tbf.rate_mbit == 100
    assert tbf.burst_bytes == 64 * 1024  # floor: one GSO super-packet
    assert tbf_params(10_000).burst_bytes == 5_000_000  # 4 ms at 10 Gbit/s
    assert tbf_params(34_000).rate_bytes < 2**32  # fits tbf's u32 rate


def test_bridge_macs_are_fixed_unicast_and_locally_administered() -> None:
    plan = LabNetPlan("fry", 2)
    assert plan.mgmt_bridge_mac == LabNetPlan("fry", 9).mgmt_bridge_mac
    assert plan.mgmt_bridge_mac != plan.inst_bridge_mac
    assert plan.mgmt_bridge_mac != LabNetPlan("fryx", 2).mgmt_bridge_mac
    first = int(plan.mgmt_bridge_mac[:2], 16)
    assert first & 0b10 and not first & 0b1


def test_describe_is_json_friendly() -> None:
    desc = LabNetPlan("fry", 2, 50).describe()
    assert desc["hosts"][1] == {
        "index": 2,
        "netns": "fry-h2",
        "mgmt_ip": "198.18.0.12",
        "mgmt_if": "mgmt0",
        "inst_bridge": "br-inst",
    }


# -- agent tap names (pure) ----------------------------------------------------------------------

UUID = "3f2a9c01-d2e4-4e5f-8a9b-0c1d2e3f4a5b"


def test_tap_name_is_deterministic_short_and_readable() -> None:
    assert tap_name(UUID, 0) == "fy3f2a9c01d2n0"
    assert tap_name(UUID.upper(), 0) == tap_name(UUID, 0)
    assert tap_name(UUID, 99) == "fy3f2a9c01d2n99"
    assert all(len(tap_name(UUID, i)) <= 15 for i in range(100))
    assert len({tap_name(UUID, i) for i in range(100)}) == 100
    assert tap_name(UUID, 0).startswith(TAP_PREFIX)


def test_tap_name_hashes_ids_that_are_not_hex() -> None:
    name = tap_name("web server #1", 0)
    assert name == tap_name("web server #1", 0)
    assert name != tap_name("web server #2", 0)
    assert len(name) <= 15
    assert name.isalnum()


def test_tap_name_refuses_out_of_range_index() -> None:
    for bad in (-1, 100):
        with pytest.raises(ValueError, match="NIC index"):
            tap_name(UUID, bad)


def test_tap_mac_differs_from_the_guest_mac() -> None:
    assert tap_mac("52:54:00:12:34:56") == "fe:54:00:12:34:56"
    assert tap_mac("FE:54:00:12:34:56") == "fa:54:00:12:34:56"
    for bad in ("01:00:5e:00:00:01", "52:54:00:12:34", "zz:54:00:12:34:56"):
        with pytest.raises(ValueError):
            tap_mac(bad)
