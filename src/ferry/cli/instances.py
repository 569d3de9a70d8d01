"""ferry flavor|network|instance ..."""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import quote

import typer

from ferry.cli.client import CliError, poll
from ferry.cli.context import api
from ferry.cli.output import Format, FormatOpt, console, emit_json, fields, styled, table, when

flavors = typer.Typer(help="Flavors: instance sizes.", no_args_is_help=True)
networks = typer.Typer(
    help="Instance networks: address ranges on every host.", no_args_is_help=True
)
instances = typer.Typer(help="Instances: create, list, show, delete.", no_args_is_help=True)

Name = Annotated[str, typer.Argument(help="name")]


@flavors.command("create")
def flavor_create(
    ctx: typer.Context,
    name: Name,
    vcpus: Annotated[int, typer.Option(min=1)] = 1,
    ram_mb: Annotated[int, typer.Option(min=64)] = 128,
    disk_gb: Annotated[int, typer.Option(min=0)] = 0,
    fmt: FormatOpt = Format.TABLE,
) -> None:
    """Create a flavor."""
    flavor = api(ctx).post(
        "/v1/flavors", {"name": name, "vcpus": vcpus, "ram_mb": ram_mb, "disk_gb": disk_gb}
    )
    emit_json(flavor) if fmt is Format.JSON else console.print(f"flavor {name} created")


@flavors.command("list")
def flavor_list(ctx: typer.Context, fmt: FormatOpt = Format.TABLE) -> None:
    """List flavors."""
    rows = api(ctx).get("/v1/flavors")
    if fmt is Format.JSON:
        emit_json(rows)
        return
    table(
        rows,
        [
            ("NAME", lambda f: f["name"]),
            ("VCPUS", lambda f: f["vcpus"]),
            ("RAM MiB", lambda f: f["ram_mb"]),
            ("DISK GiB", lambda f: f["disk_gb"]),
        ],
        empty="no flavors",
    )


@flavors.command("delete")
def flavor_delete(ctx: typer.Context, name: Name) -> None:
    """Delete a flavor."""
    api(ctx).delete(f"/v1/flavors/{quote(name, safe='')}")
    console.print(f"flavor {name} deleted")


@networks.command("create")
def network_create(
    ctx: typer.Context,
    name: Name,
    cidr: Annotated[str, typer.Option(help="IPv4 range, e.g. 198.19.0.0/16")],
    gateway: Annotated[str | None, typer.Option(help="never handed to an instance")] = None,
    allocation_start: Annotated[
        str | None, typer.Option(help="first address for instances (default: the first)")
    ] = None,
    allocation_end: Annotated[
        str | None, typer.Option(help="last address for instances (default: the last)")
    ] = None,
    fmt: FormatOpt = Format.TABLE,
) -> None:
    """Create an instance network; instances get addresses inside its allocation range (the
    rest is the network's own: DHCP servers, routers)."""
    body = {"name": name, "cidr": cidr, "gateway": gateway}
    body |= {"allocation_start": allocation_start, "allocation_end": allocation_end}
    network = api(ctx).post("/v1/networks", body)
    emit_json(network) if fmt is Format.JSON else console.print(f"network {name} created")


def _allocation(network: dict[str, Any]) -> str:
    start, end = network.get("allocation_start"), network.get("allocation_end")
    return "all" if start is None and end is None else f"{start or 'first'}-{end or 'last'}"


@networks.command("list")
def network_list(ctx: typer.Context, fmt: FormatOpt = Format.TABLE) -> None:
    """List networks."""
    rows = api(ctx).get("/v1/networks")
    if fmt is Format.JSON:
        emit_json(rows)
        return
    table(
        rows,
        [
            ("NAME", lambda n: n["name"]),
            ("RANGE", lambda n: n["cidr"]),
            ("GATEWAY", lambda n: n["gateway"] or "-"),
            ("ALLOCATION", _allocation),
        ],
        empty="no networks",
    )


@networks.command("delete")
def network_delete(ctx: typer.Context, name: Name) -> None:
    """Delete a network that no instance uses."""
    api(ctx).delete(f"/v1/networks/{quote(name, safe='')}")
    console.print(f"network {name} deleted")


def _ips(instance: dict[str, Any]) -> str:
    return ", ".join(p["ip"] for p in instance["ports"]) or "-"


COLUMNS = [
    ("NAME", lambda i: i["name"]),
    ("STATE", lambda i: styled(i["state"])),
    ("HOST", lambda i: i["host"] or "-"),
    ("FLAVOR", lambda i: i["flavor"]),
    ("IP", _ips),
    ("ERROR", lambda i: i["error"] or ""),
]


def _wait_for(ctx: typer.Context, name: str, done: set[str], timeout: float) -> dict[str, Any]:
    def fetch() -> dict[str, Any]:
        try:
            return dict(api(ctx).get(f"/v1/instances/{quote(name, safe='')}"))
        except CliError as exc:
            if "deleted" in done and "HTTP 404" in str(exc):
                return {"name": name, "state": "deleted"}
            raise

    with console.status(f"waiting for {name} ..."):
        return poll(
            fetch,
            lambda current: current["state"] in done,
            timeout=timeout,
            waiting_for=f"{name} to be {' or '.join(sorted(done))}",
        )


@instances.command("create")
def instance_create(
    ctx: typer.Context,
    name: Name,
    flavor: Annotated[str, typer.Option(help="flavor name")],
    network: Annotated[str, typer.Option(help="network name")] = "default",
    host: Annotated[str | None, typer.Option(help="place on this host")] = None,
    group: Annotated[
        str | None, typer.Option(help="server group to join (ferry server-group list)")
    ] = None,
    image: Annotated[
        str | None, typer.Option(help="catalog image of its root disk (ferry image list)")
    ] = None,
    dirty_rate: Annotated[int, typer.Option(help="MiB/s the guest rewrites in memory")] = 0,
    disk_write: Annotated[
        int, typer.Option(help="KiB/s the guest writes to its disk, checksummed (lab image)")
    ] = 0,
    wait: Annotated[bool, typer.Option("--wait", help="until it runs (or fails)")] = False,
    timeout: Annotated[float, typer.Option(help="seconds --wait waits")] = 300,
    fmt: FormatOpt = Format.TABLE,
) -> None:
    """Create an instance; the scheduler picks its host unless --host is given."""
    instance = api(ctx).post(
        "/v1/instances",
        {
            "name": name,
            "flavor": flavor,
            "network": network,
            "host": host,
            "dirty_rate_mbps": dirty_rate,
            "disk_write_kibps": disk_write,
            "group": group,
        }
        | ({"image": image} if image is not None else {}),
    )
    if wait:
        instance = _wait_for(ctx, name, {"running", "error"}, timeout)
    if fmt is Format.JSON:
        emit_json(instance)
    else:
        joined = f" in server group {g}" if (g := instance.get("server_group")) else ""
        console.print(
            f"instance {name} {instance['state']} on {instance['host']} with {_ips(instance)}"
            + joined
        )
    if instance["state"] == "error":
        raise CliError(f"instance {name} failed: {instance['error']}")


@instances.command("list")
def instance_list(
    ctx: typer.Context,
    host: Annotated[str | None, typer.Option(help="only this host")] = None,
    fmt: FormatOpt = Format.TABLE,
) -> None:
    """List instances."""
    rows = api(ctx).get("/v1/instances", host=host)
    emit_json(rows) if fmt is Format.JSON else table(rows, COLUMNS, empty="no instances")


@instances.command("show")
def instance_show(ctx: typer.Context, name: Name, fmt: FormatOpt = Format.TABLE) -> None:
    """Show one instance."""
    inst = api(ctx).get(f"/v1/instances/{quote(name, safe='')}")
    if fmt is Format.JSON:
        emit_json(inst)
        return
    fields(
        [
            ("name", inst["name"]),
            ("id", inst["id"]),
            ("state", styled(inst["state"])),
            ("host", inst["host"]),
            ("flavor", f"{inst['flavor']} ({inst['vcpus']} vCPU, {inst['ram_mb']} MiB)"),
            ("image", inst.get("image")),
            ("ports", "; ".join(f"{p['network']} {p['ip']} {p['mac']}" for p in inst["ports"])),
            ("group", inst["server_group"]),
            ("error", inst["error"]),
            ("created", f"{when(inst['created_at'])} by {inst['created_by']}"),
        ]
    )


@instances.command("delete")
def instance_delete(
    ctx: typer.Context,
    name: Name,
    wait: Annotated[bool, typer.Option("--wait", help="until it is gone")] = False,
    timeout: Annotated[float, typer.Option(help="seconds --wait waits")] = 120,
) -> None:
    """Delete an instance: its process, taps and addresses go."""
    api(ctx).delete(f"/v1/instances/{quote(name, safe='')}")
    if wait:
        _wait_for(ctx, name, {"deleted"}, timeout)
    console.print(f"instance {name} {'deleted' if wait else 'is being deleted'}")
