"""ferry controller serve."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from pydantic import ValidationError

from ferry.cli.client import CliError

app = typer.Typer(help="Run the controller.", no_args_is_help=True)


@app.command("serve")
def serve(
    state_dir: Annotated[
        Path | None, typer.Option(help="database and admin token [FERRY_STATE_DIR]")
    ] = None,
    listen: Annotated[str | None, typer.Option(help="HOST:PORT [FERRY_LISTEN]")] = None,
    config: Annotated[Path | None, typer.Option(help="TOML settings file")] = None,
    database_url: Annotated[str | None, typer.Option(help="SQLAlchemy async URL")] = None,
    log_level: Annotated[str | None, typer.Option(help="debug, info, warning")] = None,
) -> None:
    """Serve the API and run the reconcile loops. Settings: flags > FERRY_* > --config file."""
    # Imported here so that every other command starts without loading the server stack.
    from ferry.config import load_controller_settings  # noqa: PLC0415
    from ferry.serve import run  # noqa: PLC0415

    try:
        settings = load_controller_settings(
            config,
            state_dir=state_dir,
            listen=listen,
            database_url=database_url,
            log_level=log_level,
        )
    except (ValidationError, ValueError) as exc:
        raise CliError(f"invalid controller settings: {_first_line(exc)}") from exc
    run(settings)


def _first_line(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        return "; ".join(
            f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors()
        )
    return str(exc)
