"""ferry image build: the guest image (Debian cloud kernel + busybox initramfs) the lab boots."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ferry.cli.client import CliError

app = typer.Typer(help="The guest image Ferry builds from Debian packages.", no_args_is_help=True)

DEFAULT_OUT = Path("/var/lib/ferry-lab/image")


def _mib(size: int) -> str:
    return f"{size / (1 << 20):.1f} MiB"


@app.command("build")
def build(
    out: Annotated[
        Path,
        typer.Option("--out", help="output directory [FERRY_IMAGE_DIR]", envvar="FERRY_IMAGE_DIR"),
    ] = DEFAULT_OUT,
    kernel: Annotated[
        Path | None,
        typer.Option(help="kernel to use (default: newest /boot/vmlinuz-*-cloud-amd64)"),
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="rebuild even if up to date")] = False,
) -> None:
    """Build vmlinuz + initrd.gz into --out (skipped when already built from the same inputs)."""
    from ferry.lab.image import ImageError, build_image  # noqa: PLC0415

    try:
        image = build_image(out, kernel=kernel, force=force)
    except ImageError as exc:
        raise CliError(str(exc)) from exc
    except OSError as exc:
        raise CliError(f"cannot write the image to {out}: {exc.strerror or exc}") from exc
    typer.echo(f"kernel   {image.kernel}")
    typer.echo(f"initrd   {image.initrd}")
    typer.echo(f"version  {image.kernel_version}")
    typer.echo(f"sha256   {image.initrd_sha256}  (initrd)")
    typer.echo(f"size     {_mib(image.initrd.stat().st_size)} initrd, {_mib(image.size)} total")
    typer.echo(f"status   {'built' if image.rebuilt else 'up to date'}")
