"""ferry lab up|status|env|down."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Annotated

import typer

from ferry.cli.client import CliError
from ferry.cli.output import console

app = typer.Typer(
    help="A real multi-host cluster on one machine, in network namespaces.", no_args_is_help=True
)

LabDir = Annotated[
    Path,
    typer.Option(
        "--dir", help="where the lab keeps its state [FERRY_LAB_DIR]", envvar="FERRY_LAB_DIR"
    ),
]
DEFAULT_DIR = Path("/var/lib/ferry-lab")


def _say(line: str) -> None:
    console.print(f"[bold]lab[/bold] {line}")


@app.command("up")
def up(
    hosts: Annotated[int, typer.Option(min=1, max=500, help="how many hosts")] = 3,
    instances: Annotated[int, typer.Option(min=0, max=200, help="instances to boot")] = 0,
    link_mbit: Annotated[int, typer.Option(min=1, max=34000, help="management link speed")] = 1000,
    driver: Annotated[str, typer.Option(help="qemu (real guests, root) or fake")] = "qemu",
    prefix: Annotated[
        str, typer.Option(help="names of namespaces and links start with it")
    ] = "fry",
    storage: Annotated[
        str,
        typer.Option(help="instance disks: shared (one pool every host sees) or local (per host)"),
    ] = "shared",
    lab_dir: LabDir = DEFAULT_DIR,
) -> None:
    """Build the lab: network, PKI, images, controller, agents (DHCP on each host), and
    instances booted from disks of the lab image."""
    from ferry.lab.lifecycle import LabError, LabOptions  # noqa: PLC0415
    from ferry.lab.lifecycle import up as lab_up  # noqa: PLC0415

    if driver not in ("qemu", "fake"):
        raise CliError("--driver is qemu or fake")
    if storage not in ("shared", "local"):
        raise CliError("--storage is shared or local")
    if driver == "qemu" and os.geteuid() != 0:
        raise CliError(
            "a lab with real QEMU hosts needs root (namespaces, taps); try --driver fake"
        )
    from ferry.lab.net_ops import LabNetError  # noqa: PLC0415
    from ferry.lab.net_plan import LabPlanError  # noqa: PLC0415
    from ferry.pki.store import PkiError  # noqa: PLC0415

    try:
        opts = LabOptions(lab_dir, hosts, instances, link_mbit, driver, prefix, storage)
        record = asyncio.run(lab_up(opts, _say))
    except (LabError, LabNetError, LabPlanError, PkiError) as exc:
        raise CliError(f"{exc} (see the logs in {lab_dir}; `ferry lab down` cleans up)") from exc
    _say('ready. Point the CLI at it with:  eval "$(ferry lab env)"')
    for key, value in record.env().items():
        console.print(f"  export {key}={value}")


@app.command("env")
def env(lab_dir: LabDir = DEFAULT_DIR) -> None:
    """Print the FERRY_* settings for the CLI, as shell exports."""
    from ferry.lab.cluster import LabRecord  # noqa: PLC0415

    record = LabRecord.load(lab_dir.resolve())
    if record is None:
        raise CliError(f"no lab in {lab_dir}")
    for key, value in record.env().items():
        typer.echo(f"export {key}={value}")


@app.command("status")
def status(lab_dir: LabDir = DEFAULT_DIR) -> None:
    """What the lab runs: processes, namespaces and links."""
    from ferry.lab import net  # noqa: PLC0415
    from ferry.lab.cluster import LabRecord, is_ours  # noqa: PLC0415

    record = LabRecord.load(lab_dir.resolve())
    if record is None:
        raise CliError(f"no lab in {lab_dir}")
    alive = "[green]running[/green]"
    dead = "[red]gone[/red]"
    console.print(
        f"controller {record.controller_url} pid {record.controller_pid} "
        f"{alive if record.controller_pid and is_ours(record.controller_pid) else dead}"
    )
    for host in record.hosts:
        state = alive if host.pid and is_ours(host.pid) else dead
        console.print(
            f"{host.name} {host.namespace or '-'} {host.mgmt_ip}:{host.agent_port} "
            f"agent pid {host.pid} {state}"
        )
    if record.driver == "qemu":
        console.print(str(asyncio.run(net.status(record.prefix))))


@app.command("down")
def down(
    lab_dir: LabDir = DEFAULT_DIR,
    prefix: Annotated[str, typer.Option(help="used when the lab's record is lost")] = "fry",
) -> None:
    """Stop every process of the lab and remove its namespaces, links and taps."""
    from ferry.lab.lifecycle import down as lab_down  # noqa: PLC0415

    asyncio.run(lab_down(lab_dir, prefix, _say))
