"""ferry agent simulate, ferry agent serve."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import httpx
import typer

from ferry.cli.client import CliError
from ferry.cli.context import api

if TYPE_CHECKING:
    from ferry.agent.simulate import SimulatedFleet

app = typer.Typer(help="Host agents.", no_args_is_help=True)


@app.command("simulate")
def simulate(
    ctx: typer.Context,
    hosts: Annotated[int, typer.Option(min=1, max=10_000, help="how many hosts")] = 3,
    prefix: Annotated[str, typer.Option(help="host names are PREFIX1..PREFIXN")] = "host",
    vcpus: Annotated[int, typer.Option(min=1)] = 8,
    ram_mb: Annotated[int, typer.Option(min=64)] = 16384,
    disk_gb: Annotated[int, typer.Option(min=0)] = 200,
    serve: Annotated[
        bool,
        typer.Option(
            "--serve",
            help="give every host a fake-driver agent API (its own loopback port and "
            "certificate, mutual TLS) in this one process, so the controller can start and "
            "migrate guests on it",
        ),
    ] = False,
    pki: Annotated[
        Path | None,
        typer.Option(
            help="with --serve: the cluster PKI (with its CA key) to issue host "
            "certificates from; the agents admit its issued/controller certificate"
        ),
    ] = None,
    controller_cert: Annotated[
        Path | None, typer.Option(help="with --serve: the one client certificate agents admit")
    ] = None,
    run_dir: Annotated[
        Path | None, typer.Option(help="with --serve: the simulated guests' state, per host")
    ] = None,
    spread: Annotated[
        float, typer.Option(min=0, help="with --serve: spread registrations over SECONDS")
    ] = 0.0,
    network: Annotated[
        list[str] | None,
        typer.Option(
            help="with --serve: an instance network every host offers (repeat); default: default"
        ),
    ] = None,
) -> None:
    """Register simulated hosts and heartbeat them until stopped (needs an agent token). With
    --serve each host is a whole fake-driver agent, reachable by the controller."""
    client = api(ctx)
    if not client.config.token:
        raise CliError("no token: set FERRY_TOKEN to a token with the agent role")
    if serve:
        _serve_fleet(client.config.url, client.config.token, hosts, prefix, vcpus, ram_mb,
                     disk_gb, pki, controller_cert, run_dir, spread,
                     tuple(network or ["default"]))  # fmt: skip
        return
    if hosts > MAX_UNSERVED:
        raise CliError(f"at most {MAX_UNSERVED} hosts without --serve (198.18.0.x addresses)")
    # Imported here: the protocol models are not needed by any other command.
    from ferry.agent.simulate import SimulatedFleet  # noqa: PLC0415

    fleet = SimulatedFleet(client.config.url, client.config.token, hosts, prefix, vcpus, ram_mb)
    typer.echo(f"simulating {hosts} host(s) {prefix}1..{prefix}{hosts}; Ctrl-C stops", err=True)
    try:
        asyncio.run(_until_signal(fleet))
    except httpx.HTTPStatusError as exc:
        raise CliError(f"the controller refused: {exc.response.text}") from exc
    except httpx.TransportError as exc:
        raise CliError(f"cannot reach the controller at {fleet.url}: {exc}") from exc


MAX_UNSERVED = 240


async def _until_signal(fleet: SimulatedFleet) -> None:
    from ferry.agent.simulate import run  # noqa: PLC0415

    await run(fleet, stop=_stop_on_signal())


def _stop_on_signal() -> asyncio.Event:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    return stop


def _serve_fleet(
    url: str,
    token: str,
    hosts: int,
    prefix: str,
    vcpus: int,
    ram_mb: int,
    disk_gb: int,
    pki: Path | None,
    controller_cert: Path | None,
    run_dir: Path | None,
    spread: float,
    networks: tuple[str, ...],
) -> None:
    import logging  # noqa: PLC0415

    from ferry.agent import fleet  # noqa: PLC0415
    from ferry.pki.store import PkiError  # noqa: PLC0415
    from ferry.protocol import Inventory  # noqa: PLC0415

    if pki is None or run_dir is None:
        raise CliError("--serve needs --pki (the cluster PKI) and --run-dir")
    if not url.startswith("https://"):
        raise CliError(f"--serve needs the controller over https, not {url}")
    logging.basicConfig(level="WARNING", format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    spec = fleet.FleetSpec(
        controller_url=url,
        token=token,
        pki_dir=pki,
        run_dir=run_dir,
        count=hosts,
        prefix=prefix,
        inventory=Inventory(vcpus=vcpus, ram_mb=ram_mb, disk_gb=disk_gb),
        controller_cert=controller_cert,
        spread_s=spread,
        networks=networks,
    )
    if not spec.pinned_cert.is_file():
        raise CliError(f"no controller certificate at {spec.pinned_cert}: pass --controller-cert")

    async def serve_until_signal() -> None:
        await fleet.run(spec, _stop_on_signal())

    try:
        asyncio.run(serve_until_signal())
    except PkiError as exc:
        raise CliError(str(exc)) from exc


@app.command("serve")
def serve(
    config: Annotated[
        list[Path],
        typer.Option(
            "--config",
            help="an agent's TOML settings; repeat to run several hosts "
            "(simulated ones) in this one process",
        ),
    ],
    log_level: Annotated[str, typer.Option(help="debug, info, warning")] = "info",
) -> None:
    """Run this host's agent: HTTPS API for the controller (mutual TLS), registration and
    heartbeats, and the guests of its driver."""
    import logging  # noqa: PLC0415

    from ferry.agent.config import AgentConfigError, load_agent_settings  # noqa: PLC0415
    from ferry.agent.drivers.kvm_probe import KvmUnusable  # noqa: PLC0415
    from ferry.agent.runtime import serve_all  # noqa: PLC0415

    logging.basicConfig(
        level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        settings = [load_agent_settings(path) for path in config]
    except AgentConfigError as exc:
        raise CliError(str(exc)) from exc
    if len(settings) > 1 and any(s.driver != "fake" for s in settings):
        raise CliError("only simulated (fake) hosts can share one agent process")
    try:
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(serve_all(settings))
    except KvmUnusable as exc:
        raise CliError(str(exc)) from exc
