"""Flavors and networks: what instances are made of and attached to."""

from __future__ import annotations

import ipaddress
import re

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from ferry.db.models import Flavor, Instance, Network, Port
from ferry.domain.errors import Conflict, InvalidInput, NotFound
from ferry.domain.instance import InstanceState
from ferry.services.store import Store

_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")


def _name(kind: str, name: str) -> str:
    if not _NAME.match(name):
        raise InvalidInput(f"invalid {kind} name {name!r}: 1-63 of a-z, 0-9 and '-'")
    return name


async def get_flavor(session: AsyncSession, name: str) -> Flavor:
    flavor = await session.scalar(select(Flavor).where(Flavor.name == name))
    if flavor is None:
        raise NotFound(f"no flavor named {name!r}")
    return flavor


async def get_network(session: AsyncSession, name: str) -> Network:
    network = await session.scalar(select(Network).where(Network.name == name))
    if network is None:
        raise NotFound(f"no network named {name!r}")
    return network


def parse_network(cidr: str, gateway: str | None) -> tuple[str, str | None]:
    try:
        net = ipaddress.ip_network(cidr, strict=True)
    except ValueError as exc:
        raise InvalidInput(f"invalid network range {cidr!r}: {exc}") from exc
    if net.version != 4 or net.prefixlen > 30:
        raise InvalidInput(f"network range {cidr} must be IPv4 with room for hosts (/30 or wider)")
    if gateway is not None:
        try:
            gw = ipaddress.ip_address(gateway)
        except ValueError as exc:
            raise InvalidInput(f"invalid gateway {gateway!r}") from exc
        if gw not in net or gw in (net.network_address, net.broadcast_address):
            raise InvalidInput(f"gateway {gateway} is not a host address of {cidr}")
    return str(net), gateway


def parse_allocation(
    cidr: str, start: str | None, end: str | None
) -> tuple[str | None, str | None]:
    """The allocation range of network `cidr`: host addresses, start before end."""
    net = ipaddress.IPv4Network(cidr)
    parsed: list[ipaddress.IPv4Address | None] = []
    for which, value in (("allocation_start", start), ("allocation_end", end)):
        if value is None:
            parsed.append(None)
            continue
        try:
            address = ipaddress.IPv4Address(value)
        except ValueError as exc:
            raise InvalidInput(f"invalid {which} {value!r}") from exc
        if address not in net or address in (net.network_address, net.broadcast_address):
            raise InvalidInput(f"{which} {value} is not a host address of {cidr}")
        parsed.append(address)
    if parsed[0] is not None and parsed[1] is not None and parsed[0] > parsed[1]:
        raise InvalidInput(f"allocation_start {start} is after allocation_end {end}")
    return start, end


class CatalogService:
    def __init__(self, store: Store) -> None:
        self.store = store

    async def create_flavor(self, name: str, vcpus: int, ram_mb: int, disk_gb: int) -> Flavor:
        _name("flavor", name)
        async with self.store.write() as session:
            if await session.scalar(select(Flavor).where(Flavor.name == name)):
                raise Conflict(f"a flavor named {name!r} exists already")
            flavor = Flavor(name=name, vcpus=vcpus, ram_mb=ram_mb, disk_gb=disk_gb)
            session.add(flavor)
        return flavor

    async def flavors(self) -> list[Flavor]:
        async with self.store.reading() as session:
            return list((await session.scalars(select(Flavor).order_by(Flavor.name))).all())

    async def delete_flavor(self, name: str) -> None:
        async with self.store.write() as session:
            await session.delete(await get_flavor(session, name))

    async def create_network(
        self,
        name: str,
        cidr: str,
        gateway: str | None,
        allocation: tuple[str | None, str | None] = (None, None),
    ) -> Network:
        """A network; instances get addresses in `allocation` (start, end; None: the range's
        first or last host address)."""
        _name("network", name)
        cidr, gateway = parse_network(cidr, gateway)
        start, end = parse_allocation(cidr, *allocation)
        async with self.store.write() as session:
            if await session.scalar(select(Network).where(Network.name == name)):
                raise Conflict(f"a network named {name!r} exists already")
            network = Network(
                name=name, cidr=cidr, gateway=gateway, allocation_start=start, allocation_end=end
            )
            session.add(network)
        return network

    async def leases(self, name: str) -> tuple[Network, list[tuple[str, str, str]]]:
        """The network and its fixed DHCP leases: (MAC, IP, hostname) of every port of a live
        instance, by IP. Plain rows: a network can hold thousands of ports."""
        async with self.store.reading() as session:
            network = await get_network(session, name)
            rows = await session.execute(
                select(Port.mac, Port.ip, Instance.name)
                .join(Instance, Port.instance_id == Instance.id)
                .where(Port.network == name, Instance.state != InstanceState.DELETED.value)
            )
            leases = sorted(
                ((mac, ip, host) for mac, ip, host in rows.tuples()),
                key=lambda lease: ipaddress.IPv4Address(lease[1]),
            )
        return network, leases

    async def networks(self) -> list[Network]:
        async with self.store.reading() as session:
            return list((await session.scalars(select(Network).order_by(Network.name))).all())

    async def delete_network(self, name: str) -> None:
        async with self.store.write() as session:
            network = await get_network(session, name)
            ports = await session.scalar(
                select(func.count())
                .select_from(Port)
                .join(Instance, Port.instance_id == Instance.id)
                .where(Port.network == name)
            )
            if ports:
                raise Conflict(f"network {name!r} still has {ports} port(s)")
            await session.delete(network)
