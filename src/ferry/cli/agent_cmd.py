"""ferry agent simulate."""

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
    hosts: Annotated[int, typer.Option(min=1, max=250, help="how many hosts")] = 3,
    prefix: Annotated[str, typer.Option(help="host names are PREFIX1..PREFIXN")] = "host",
    vcpus: Annotated[int, typer.Option(min=1)] = 8,
    ram_mb: Annotated[int, typer.Option(min=64)] = 16384,
) -> None:
    """Register simulated hosts and heartbeat them until stopped (needs an agent token)."""
    # Imported here: the protocol models are not needed by any other command.
    from ferry.agent.simulate import SimulatedFleet  # noqa: PLC0415

    client = api(ctx)
    if not client.config.token:
        raise CliError("no token: set FERRY_TOKEN to a token with the agent role")
    fleet = SimulatedFleet(client.config.url, client.config.token, hosts, prefix, vcpus, ram_mb)
    typer.echo(f"simulating {hosts} host(s) {prefix}1..{prefix}{hosts}; Ctrl-C stops", err=True)
    try:
        asyncio.run(_until_signal(fleet))
    except httpx.HTTPStatusError as exc:
        raise CliError(f"the controller refused: {exc.response.text}") from exc
    except httpx.TransportError as exc:
        raise CliError(f"cannot reach the controller at {fleet.url}: {exc}") from exc


async def _until_signal(fleet: SimulatedFleet) -> None:
    from ferry.agent.simulate import run  # noqa: PLC0415

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    await run(fleet, stop=stop)


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
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve_all(settings))
