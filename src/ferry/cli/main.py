"""The `ferry` command."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from ferry import __version__
from ferry.cli import (
    agent_cmd,
    bench_cmd,
    controller_cmd,
    events,
    faults_cmd,
    hosts,
    image_cmd,
    images,
    instances,
    lab_cmd,
    migrations,
    pki_cmd,
    server_groups,
    tokens,
    webhooks,
)
from ferry.cli.client import CliError

app = typer.Typer(
    name="ferry",
    help="Ferry: take hosts of a QEMU/KVM cloud into maintenance and back, without downtime.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.add_typer(hosts.app, name="host")
instances.instances.command("migrate")(migrations.migrate)
app.add_typer(instances.instances, name="instance")
app.add_typer(migrations.app, name="migration")
app.add_typer(instances.flavors, name="flavor")
app.add_typer(instances.networks, name="network")
app.add_typer(server_groups.app, name="server-group")
app.add_typer(events.app, name="event")
app.add_typer(webhooks.app, name="webhook")
app.add_typer(tokens.app, name="token")
app.add_typer(controller_cmd.app, name="controller")
app.add_typer(agent_cmd.app, name="agent")
app.add_typer(pki_cmd.app, name="pki")
images.app.command("build")(image_cmd.build)
app.add_typer(images.app, name="image")
app.add_typer(lab_cmd.app, name="lab")
app.add_typer(bench_cmd.app, name="bench")
app.add_typer(faults_cmd.app, name="faults")


def _version(value: bool) -> None:
    if value:
        typer.echo(f"ferry {__version__}")
        raise typer.Exit


@app.callback()
def root(
    url: Annotated[str | None, typer.Option(help="controller URL [FERRY_URL]")] = None,
    token: Annotated[str | None, typer.Option(help="API token [FERRY_TOKEN]")] = None,
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True)] = False,
) -> None:
    """Connection settings: flags, then FERRY_URL / FERRY_TOKEN / FERRY_TOKEN_FILE, then
    ~/.config/ferry/cli.toml (or FERRY_CONFIG) with url and token or token_file."""


def main() -> None:
    try:
        app()
    except CliError as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)
