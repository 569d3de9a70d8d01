"""Regressions found by `ferry bench scale` (1,000 hosts, 20,000 instances): work that grew with
the number of instances or migrations where it need not, and wake-ups that made every reconcile
loop run a pass per heartbeat."""

from __future__ import annotations

import asyncio
from typing import Any

from sqlalchemy import event, select

from ferry.agent_client import AgentClient
from ferry.db.database import Database
from ferry.db.models import Allocation, Host, Instance, Migration
from ferry.orchestrator.instances import InstanceReconciler
from ferry.orchestrator.migration.reconciler import MigrationReconciler
from ferry.protocol import GuestReport, GuestSpecIn
from ferry.services.store import EventBus, Store
from tests.api.conftest import Api, Token

CAPS = {"cpu_model": "EPYC-Rome", "qemu_version": "8.2.2", "machine_type": "pc-q35-8.2"}


async def _cluster(api: Api, instances: int) -> None:
    """node-1 and node-2 on network lab; `instances` instances on node-1, half in group g."""
    for name in ("node-1", "node-2"):
        response = await api.register(name, capabilities={**CAPS, "networks": ["lab"]})
        assert response.status_code == 200, response.text
    operator = await api.token("operator")
    for path, made in (
        ("/v1/flavors", {"name": "m1", "vcpus": 2, "ram_mb": 1024, "disk_gb": 10}),
        ("/v1/networks", {"name": "lab", "cidr": "10.9.0.0/24"}),
        ("/v1/server-groups", {"name": "g", "policy": "soft-affinity"}),
    ):
        assert (await api.call("POST", path, operator, json=made)).status_code == 201
    for n in range(instances):
        body: dict[str, Any] = {"name": f"vm-{n}", "flavor": "m1", "network": "lab",
                                "host": "node-1"}  # fmt: skip
        if n % 2:
            body["group"] = "g"
        response = await api.call("POST", "/v1/instances", operator, json=body)
        assert response.status_code == 201, response.text


async def _flavor_and_network(api: Api, operator: Token) -> None:
    """Flavor m1 (1 vCPU, 512 MiB, 1 GB) and network lab (10.9.0.0/24)."""
    for path, made in (
        ("/v1/flavors", {"name": "m1", "vcpus": 1, "ram_mb": 512, "disk_gb": 1}),
        ("/v1/networks", {"name": "lab", "cidr": "10.9.0.0/24"}),
    ):
        assert (await api.call("POST", path, operator, json=made)).status_code == 201


async def test_candidates_sum_claims_in_the_database(api: Api) -> None:
    """Regression: every placement loaded every allocation of the cluster as an object (20,000
    at the bench's size) to add them up in Python; the database sums them per host now."""
    await _cluster(api, 6)
    loaded: list[object] = []

    def count(target: object, _context: object) -> None:
        loaded.append(target)

    event.listen(Allocation, "load", count)
    try:
        async with api.controller.db.reading() as session:
            everyone = {c.name: c for c in await api.controller.placer.candidates(session)}
            only = await api.controller.placer.candidates(session, only="node-2")
    finally:
        event.remove(Allocation, "load", count)
    assert loaded == []
    one = everyone["node-1"]
    assert (one.used.vcpus, one.used.ram_mb, one.used.disk_gb) == (12, 6144, 60)
    assert one.members == {"g": 3}
    assert (everyone["node-2"].used.vcpus, everyone["node-2"].members) == (0, {})
    assert [c.name for c in only] == ["node-2"]


async def test_a_heartbeat_wakes_no_loop_unless_the_host_comes_back(api: Api) -> None:
    """Regression: each heartbeat committed through the waking store, so a thousand hosts made
    every reconcile loop run a pass per heartbeat, with nothing for it to do."""
    await api.register("node-1")
    await api.token("agent")
    bus = api.controller.bus
    seen = bus.current()
    assert (await api.heartbeat()).status_code == 200
    assert not seen.is_set()
    async with api.controller.db.writing() as session:
        host = await session.scalar(select(Host).where(Host.name == "node-1"))
        assert host is not None
        host.liveness_seen = "down"  # as the liveness loop marks a silent host
    seen = bus.current()
    assert (await api.heartbeat()).status_code == 200
    assert seen.is_set()
    assert "host.up" in await api.kinds(kind="host")


async def _add_running_migrations(api: Api, count: int) -> None:
    async with api.controller.db.writing() as session:
        hosts = {h.name: h.id for h in (await session.scalars(select(Host))).all()}
        instances = (await session.scalars(select(Instance).order_by(Instance.name))).all()
        for instance in instances[:count]:
            session.add(
                Migration(
                    instance_id=instance.id,
                    source_host_id=hosts["node-1"],
                    dest_host_id=hosts["node-2"],
                    state="running",
                )
            )


async def _statements_to_read_jobs(api: Api) -> tuple[int, int]:
    """Statements one migration pass spends reading its jobs, on an engine of its own."""
    db = Database(api.controller.settings.db_url)
    try:
        reconciler = MigrationReconciler(Store(db, EventBus()), AgentClient(None))
        before = db.statements.total
        jobs = await reconciler._jobs()
        return len(jobs), db.statements.total - before
    finally:
        await db.dispose()


async def test_reading_migration_jobs_costs_the_same_for_one_or_many(api: Api) -> None:
    """Regression: each pass of the migration loop fetched every migration's instance, hosts and
    drain one by one (N+1 queries, at every commit that woke the loop)."""
    await _cluster(api, 12)
    await _add_running_migrations(api, 2)
    few, few_statements = await _statements_to_read_jobs(api)
    await _add_running_migrations(api, 12)
    many, many_statements = await _statements_to_read_jobs(api)
    assert (few, many) == (2, 14)
    assert many_statements == few_statements <= 6


async def test_one_pass_starts_instances_of_different_hosts_in_parallel(api: Api) -> None:
    """Regression: the instance loop started instances one at a time across the cluster, so
    booting thousands went at the pace of one agent call, and an agent slow to answer held up
    every other host's instances."""
    for name in ("node-1", "node-2"):
        caps = {**CAPS, "networks": ["lab"]}
        url = f"https://{name}.invalid:1"
        assert (await api.register(name, capabilities=caps, agent_url=url)).status_code == 200
    loop = await api.stop_loop("instances")  # this test runs the passes itself
    reconciler: InstanceReconciler = loop.step.__self__  # type: ignore[attr-defined]
    released = asyncio.Event()

    async def spawn(agent_url: str, spec: GuestSpecIn) -> GuestReport:
        if "node-1" in agent_url:
            await released.wait()  # an agent slow to answer
        return GuestReport(id=spec.id, name=spec.name, power="running")

    reconciler.agents.spawn = spawn  # type: ignore[method-assign]
    operator = await api.token("operator")
    await _flavor_and_network(api, operator)
    for name, host in (("slow", "node-1"), ("fast", "node-2")):
        body = {"name": name, "flavor": "m1", "network": "lab", "host": host}
        assert (await api.call("POST", "/v1/instances", operator, json=body)).status_code == 201

    async def state(name: str) -> str:
        return str((await api.ok("GET", f"/v1/instances/{name}", api.admin))["state"])

    async def running(name: str) -> bool:
        return await state(name) == "running"

    one_pass = asyncio.create_task(reconciler.step())
    await api.eventually(lambda: running("fast"))
    assert await state("slow") == "building" and not one_pass.done()
    released.set()
    await asyncio.wait_for(one_pass, 5.0)
    assert await state("slow") == "running"


async def test_a_create_is_answered_from_what_it_wrote(api: Api) -> None:
    """Regression: seeding 20,000 instances ran at 8-19 creates/s, its writes serialized and
    each paying per statement. A create named its host twice more after reading it, counted
    group members for a request without a group, and after committing read the instance, its
    ports and its host back. Its answer is the instance as a read shows it."""
    await _cluster(api, 2)
    operator = await api.token("operator")
    for body in (
        {"name": "pinned", "flavor": "m1", "network": "lab", "host": "node-2"},
        {"name": "placed", "flavor": "m1", "network": "lab"},
        {"name": "grouped", "flavor": "m1", "network": "lab", "group": "g"},
    ):
        response = await api.call("POST", "/v1/instances", operator, json=body)
        assert response.status_code == 201, response.text
        shown = await api.ok("GET", f"/v1/instances/{body['name']}", api.admin)
        assert response.json() == shown
        assert shown["host"] == body.get("host", shown["host"]) and len(shown["ports"]) == 1
    grouped = {i["name"]: i["host"] for i in await api.ok("GET", "/v1/instances", api.admin)}
    assert grouped["grouped"] == "node-1"  # soft affinity: where the group's members are


async def test_candidates_of_one_host_match_those_of_all(api: Api) -> None:
    """One named host is read in one statement (claims and inbound migrations by subqueries);
    it must see what the read of every host sees."""
    await _cluster(api, 6)
    await _add_running_migrations(api, 2)
    async with api.controller.db.reading() as session:
        everyone = {c.name: c for c in await api.controller.placer.candidates(session)}
        for name in ("node-1", "node-2"):
            assert await api.controller.placer.candidates(session, only=name) == [everyone[name]]
        assert await api.controller.placer.candidates(session, only="ghost") == []
    assert everyone["node-2"].inbound == 2 and everyone["node-1"].used.vcpus == 12


async def test_a_heartbeat_and_its_guest_report_are_one_write(api: Api) -> None:
    """Regression: a heartbeat carrying its host's guests took the serialized write twice (the
    beat, then the report): at 1,000 hosts, a fifth of the write time that creates waited for.
    The report wakes listeners only when it changes an instance."""
    await _cluster(api, 2)
    agent = await api.token("agent")
    listed = await api.ok("GET", "/v1/instances", api.admin)
    guests = [{"id": i["id"], "name": i["name"], "power": "running"} for i in listed]
    db = api.controller.db
    writes: list[int] = []
    original = db.writing

    def counted() -> Any:
        writes.append(1)
        return original()

    db.writing = counted  # type: ignore[method-assign]
    try:
        for expected_wake in (True, False):
            seen = api.controller.bus.current()
            writes.clear()
            url = "/v1/agent/hosts/node-1/heartbeat"
            response = await api.call("POST", url, agent, json={"guests": guests})
            assert response.status_code == 200, response.text
            assert len(writes) == 1
            assert seen.is_set() is expected_wake
    finally:
        db.writing = original  # type: ignore[method-assign]
    states = {i["name"]: i["state"] for i in await api.ok("GET", "/v1/instances", api.admin)}
    assert states == {"vm-0": "running", "vm-1": "running"}


async def test_starts_that_finish_while_the_write_is_busy_are_recorded_together(
    api: Api,
) -> None:
    """Regression: each instance started was recorded in a transaction of its own, so seeding
    took the serialized write once more per instance. Outcomes that wait for the write are now
    recorded by one transaction."""
    names = ("node-1", "node-2", "node-3")
    for name in names:
        caps = {**CAPS, "networks": ["lab"]}
        url = f"https://{name}.invalid:1"
        assert (await api.register(name, capabilities=caps, agent_url=url)).status_code == 200
    loop = await api.stop_loop("instances")  # this test runs the pass itself
    reconciler: InstanceReconciler = loop.step.__self__  # type: ignore[attr-defined]
    spawned: list[str] = []

    async def spawn(agent_url: str, spec: GuestSpecIn) -> GuestReport:
        spawned.append(spec.name)
        return GuestReport(id=spec.id, name=spec.name, power="running")

    reconciler.agents.spawn = spawn  # type: ignore[method-assign]
    operator = await api.token("operator")
    await _flavor_and_network(api, operator)
    for n, host in enumerate(names):
        body = {"name": f"vm-{n}", "flavor": "m1", "network": "lab", "host": host}
        assert (await api.call("POST", "/v1/instances", operator, json=body)).status_code == 201
    bus = api.controller.bus
    notified: list[int] = []
    notify = bus.notify

    def counted() -> None:
        notified.append(1)
        notify()

    bus.notify = counted  # type: ignore[method-assign]
    try:
        async with api.controller.db.writing():  # the write is busy while all three start
            one_pass = asyncio.create_task(reconciler.step())
            await api.eventually(lambda: _true(len(spawned) == 3))
        await asyncio.wait_for(one_pass, 5.0)
    finally:
        bus.notify = notify  # type: ignore[method-assign]
    states = {i["name"]: i["state"] for i in await api.ok("GET", "/v1/instances", api.admin)}
    assert states == {"vm-0": "running", "vm-1": "running", "vm-2": "running"}
    assert len(notified) == 1
    running = [e for e in await api.events(kind="instance.running")]
    assert len(running) == 3 and all("running" in e["message"] for e in running)


async def _true(value: bool) -> bool:
    return value
