"""Names and addresses of a lab network: pure functions, no I/O.

Every name a lab creates starts with `<prefix>-`, so a crashed lab can be found and removed
from its names alone (no state file). Prefixes are 2-8 lower-case letters and digits and
contain no dash, so `fry-` never matches the names of a lab whose prefix is `fryx`.

Root namespace:
  <prefix>-mgmt   management fabric bridge, 198.18.0.1/16 (the controller listens here)
  <prefix>-inst   instance fabric bridge, 198.19.0.1/16 (reach instance IPs from the root ns)
  <prefix>-m<i>   root end of host i's management veth, port of <prefix>-mgmt (shaped)
  <prefix>-i<i>   root end of host i's instance-fabric veth, port of <prefix>-inst
Namespace <prefix>-h<i> (host i, 1-based):
  mgmt0           management veth end, 198.18.0.0/16 + (10 + i), e.g. 198.18.0.11 (shaped)
  br-inst         the host's instance bridge (the agent plugs guest taps here)
  inst0           instance-fabric veth end, port of br-inst (no address)

Addresses: management is 198.18.0.0/16 (a /24 cannot hold 500 hosts); host i gets offset 10 + i,
which for i <= 245 is 198.18.0.(10+i). Instances live in 198.19.0.0/16: 198.19.0.0/24 is kept for
infrastructure and tests (198.19.0.1 is the root namespace), instance n gets 198.19.1.1 + n. The
two /16s are the two halves of the benchmarking range 198.18.0.0/15 and never overlap.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
from dataclasses import dataclass
from typing import Any

LAB_RANGE = ipaddress.IPv4Network("198.18.0.0/15")
MGMT_NETWORK = ipaddress.IPv4Network("198.18.0.0/16")
INST_NETWORK = ipaddress.IPv4Network("198.19.0.0/16")
MGMT_ROOT_IP = ipaddress.IPv4Address("198.18.0.1")
INST_ROOT_IP = ipaddress.IPv4Address("198.19.0.1")
MGMT_HOST_OFFSET = 10
INST_FIRST_INSTANCE = ipaddress.IPv4Address("198.19.1.1")

HOST_MGMT_IF = "mgmt0"
HOST_INST_BRIDGE = "br-inst"
HOST_INST_UPLINK = "inst0"

MAX_HOSTS = 1000
MAX_LINK_MBIT = 34_000  # tbf's rate is a u32 in bytes/s (pyroute2 does not send TCA_TBF_RATE64)
IFNAMSIZ = 15  # usable characters of a Linux interface name

TBF_LATENCY_MS = 50
TBF_MIN_BURST = 64 * 1024  # >= one GSO super-packet, so tbf need not split them
TBF_BURST_SECONDS = 0.004  # ... or 4 ms at line rate, whichever is larger

_PREFIX_RE = re.compile(r"[a-z][a-z0-9]{1,7}")


class LabPlanError(ValueError):
    """A lab plan (prefix, host count, link speed or host index) is out of range."""


def check_prefix(prefix: str) -> str:
    """Return `prefix` if it is a valid lab prefix, else raise LabPlanError.

    Teardown removes everything named `<prefix>-*`; an empty or odd prefix would be dangerous.
    """
    if not _PREFIX_RE.fullmatch(prefix):
        raise LabPlanError(
            f"invalid lab prefix {prefix!r}: 2-8 characters, lower-case letters and digits, "
            "starting with a letter"
        )
    return prefix


def lab_of_bridge(link: str) -> str | None:
    """The prefix of the lab whose fabric bridge `link` is (`<prefix>-mgmt`, `<prefix>-inst`)."""
    prefix, _, role = link.rpartition("-")
    return prefix if role in ("mgmt", "inst") and _PREFIX_RE.fullmatch(prefix) else None


def name_prefix(prefix: str) -> str:
    """What every name of the lab `prefix` starts with."""
    return f"{check_prefix(prefix)}-"


@dataclass(frozen=True)
class TbfParams:
    """Token bucket for one direction of a host's management link."""

    rate_bytes: int  # bytes per second
    burst_bytes: int
    latency_ms: int

    @property
    def rate_mbit(self) -> float:
        return self.rate_bytes * 8 / 1_000_000


def tbf_params(link_mbit: int) -> TbfParams:
    rate = link_mbit * 1_000_000 // 8
    burst = max(TBF_MIN_BURST, int(rate * TBF_BURST_SECONDS))
    return TbfParams(rate_bytes=rate, burst_bytes=burst, latency_ms=TBF_LATENCY_MS)


@dataclass(frozen=True)
class LabNetPlan:
    """The network of a lab: `hosts` namespaces numbered 1..hosts, links of `link_mbit` Mbit/s
    (None: unshaped)."""

    prefix: str = "fry"
    hosts: int = 2
    link_mbit: int | None = None

    def __post_init__(self) -> None:
        check_prefix(self.prefix)
        if not 1 <= self.hosts <= MAX_HOSTS:
            raise LabPlanError(f"hosts must be 1..{MAX_HOSTS}, got {self.hosts}")
        if self.link_mbit is not None and not 1 <= self.link_mbit <= MAX_LINK_MBIT:
            raise LabPlanError(f"link_mbit must be 1..{MAX_LINK_MBIT} or None")

    # -- hosts -------------------------------------------------------------------------------
    @property
    def host_indices(self) -> range:
        return range(1, self.hosts + 1)

    def _check(self, i: int) -> int:
        if not 1 <= i <= self.hosts:
            raise LabPlanError(f"host index {i} outside 1..{self.hosts}")
        return i

    def host_ns(self, i: int) -> str:
        return f"{self.prefix}-h{self._check(i)}"

    # -- root-namespace link names -----------------------------------------------------------
    @property
    def name_prefix(self) -> str:
        return f"{self.prefix}-"

    @property
    def mgmt_bridge(self) -> str:
        return f"{self.prefix}-mgmt"

    @property
    def inst_bridge(self) -> str:
        return f"{self.prefix}-inst"

    def bridge_mac(self, role: int) -> str:
        """A fixed, locally administered MAC for a fabric bridge (1: mgmt, 2: inst), derived
        from the prefix. Fixed, so the root namespace's MAC does not follow the lowest port MAC
        as hosts come and go (hosts' ARP caches stay right)."""
        digest = hashlib.blake2b(self.prefix.encode(), digest_size=3).digest()
        return ":".join(f"{b:02x}" for b in (0x02, *digest, 0x00, role))

    @property
    def mgmt_bridge_mac(self) -> str:
        return self.bridge_mac(1)

    @property
    def inst_bridge_mac(self) -> str:
        return self.bridge_mac(2)

    def mgmt_root_veth(self, i: int) -> str:
        return f"{self.prefix}-m{self._check(i)}"

    def inst_root_veth(self, i: int) -> str:
        return f"{self.prefix}-i{self._check(i)}"

    # -- addresses ---------------------------------------------------------------------------
    @property
    def mgmt_prefixlen(self) -> int:
        return MGMT_NETWORK.prefixlen

    @property
    def inst_prefixlen(self) -> int:
        return INST_NETWORK.prefixlen

    @property
    def controller_ip(self) -> str:
        """The root namespace's management address (where the controller listens)."""
        return str(MGMT_ROOT_IP)

    @property
    def inst_root_ip(self) -> str:
        """The root namespace's address on the instance fabric."""
        return str(INST_ROOT_IP)

    def mgmt_ip(self, i: int) -> str:
        """Host i's management (and migration) address."""
        return str(MGMT_NETWORK.network_address + MGMT_HOST_OFFSET + self._check(i))

    def mgmt_cidr(self, i: int) -> str:
        return f"{self.mgmt_ip(i)}/{self.mgmt_prefixlen}"

    @staticmethod
    def instance_ip(n: int) -> str:
        """The n-th (0-based) instance address of the lab; it is the same on every host."""
        address = INST_FIRST_INSTANCE + n
        if n < 0 or address >= INST_NETWORK.broadcast_address:
            raise LabPlanError(f"instance number {n} outside the instance network")
        return str(address)

    # -- shaping -----------------------------------------------------------------------------
    @property
    def tbf(self) -> TbfParams | None:
        return None if self.link_mbit is None else tbf_params(self.link_mbit)

    def describe(self) -> dict[str, Any]:
        """A JSON-able summary (for a state file or `ferry lab status`)."""
        return {
            "prefix": self.prefix,
            "link_mbit": self.link_mbit,
            "mgmt_bridge": self.mgmt_bridge,
            "inst_bridge": self.inst_bridge,
            "controller_ip": self.controller_ip,
            "inst_root_ip": self.inst_root_ip,
            "hosts": [
                {
                    "index": i,
                    "netns": self.host_ns(i),
                    "mgmt_ip": self.mgmt_ip(i),
                    "mgmt_if": HOST_MGMT_IF,
                    "inst_bridge": HOST_INST_BRIDGE,
                }
                for i in self.host_indices
            ],
        }
