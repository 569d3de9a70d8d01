"""Server groups: instances the scheduler keeps together (affinity) or apart (anti-affinity),
strictly or, for the soft variants, as far as the hosts allow. Members name their group when
they are created; a group goes only once no live instance names it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from ferry.db.models import Host, Instance, ServerGroup
from ferry.domain.errors import Conflict, InvalidInput, NotFound
from ferry.domain.events import EventKind
from ferry.domain.instance import InstanceState
from ferry.scheduler.model import GroupPolicy
from ferry.services.catalog import _name
from ferry.services.store import Store, record

POLICIES = tuple(p.value for p in GroupPolicy)


@dataclass(frozen=True)
class Member:
    name: str
    host: str | None
    state: str


@dataclass(frozen=True)
class GroupView:
    name: str
    policy: str
    created_by: str
    created_at: datetime
    members: tuple[Member, ...]


def policy_of(value: str) -> GroupPolicy:
    try:
        return GroupPolicy(value)
    except ValueError:
        raise InvalidInput(
            f"invalid server group policy {value!r}: use one of {', '.join(POLICIES)}"
        ) from None


async def get_group(session: AsyncSession, name: str) -> ServerGroup:
    group = await session.scalar(select(ServerGroup).where(ServerGroup.name == name))
    if group is None:
        raise NotFound(f"no server group named {name!r}")
    return group


async def _members(session: AsyncSession, names: list[str]) -> dict[str, list[Member]]:
    """The live (not deleted) instances of each named group, by instance name."""
    rows = await session.execute(
        select(Instance.server_group, Instance.name, Host.name, Instance.state)
        .outerjoin(Host, Instance.host_id == Host.id)
        .where(
            Instance.server_group.in_(names),
            Instance.state != InstanceState.DELETED.value,
        )
        .order_by(Instance.name)
    )
    found: dict[str, list[Member]] = {name: [] for name in names}
    for group, instance, host, state in rows.all():
        if group is not None:
            found[group].append(Member(instance, host, state))
    return found


def _view(group: ServerGroup, members: list[Member]) -> GroupView:
    return GroupView(group.name, group.policy, group.created_by, group.created_at, tuple(members))


class ServerGroupService:
    def __init__(self, store: Store) -> None:
        self.store = store

    async def create(self, name: str, policy: str, actor: str) -> GroupView:
        _name("server group", name)
        chosen = policy_of(policy)
        async with self.store.write() as session:
            if await session.scalar(select(ServerGroup.id).where(ServerGroup.name == name)):
                raise Conflict(f"a server group named {name!r} exists already")
            group = ServerGroup(name=name, policy=chosen.value, created_by=actor)
            session.add(group)
            record(
                session,
                EventKind.SERVER_GROUP_CREATED,
                actor,
                f"server group {name} created ({chosen.value})",
                data={"group": name, "policy": chosen.value},
            )
            await session.flush()
            return _view(group, [])

    async def all(self) -> list[GroupView]:
        async with self.store.reading() as session:
            groups = list(
                (await session.scalars(select(ServerGroup).order_by(ServerGroup.name))).all()
            )
            members = await _members(session, [g.name for g in groups])
            return [_view(g, members[g.name]) for g in groups]

    async def get(self, name: str) -> GroupView:
        async with self.store.reading() as session:
            group = await get_group(session, name)
            return _view(group, (await _members(session, [name]))[name])

    async def delete(self, name: str, actor: str) -> None:
        async with self.store.write() as session:
            group = await get_group(session, name)
            members = (await _members(session, [name]))[name]
            if members:
                listed = ", ".join(m.name for m in members)
                raise Conflict(
                    f"server group {name!r} still has {len(members)} instance(s): {listed}"
                )
            record(
                session,
                EventKind.SERVER_GROUP_DELETED,
                actor,
                f"server group {name} deleted",
                data={"group": name, "policy": group.policy},
            )
            await session.delete(group)
