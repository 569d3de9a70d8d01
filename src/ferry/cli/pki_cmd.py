"""ferry pki init|issue|show: the cluster CA and its certificates, on local files."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer

from ferry.cli.client import CliError
from ferry.cli.output import Format, FormatOpt, emit_json
from ferry.pki import ca
from ferry.pki.describe import CertSummary, describe
from ferry.pki.names import CertKind

app = typer.Typer(
    help="Cluster PKI: the CA and host and controller certificates.", no_args_is_help=True
)

DirOpt = Annotated[
    Path,
    typer.Option(
        "--dir",
        envvar="FERRY_PKI_DIR",
        help="PKI directory: ca-cert.pem, ca-key.pem, issued/NAME/ [FERRY_PKI_DIR]",
    ),
]
ForceOpt = Annotated[bool, typer.Option("--force", help="replace what is there")]


@contextmanager
def _one_line_errors() -> Iterator[None]:
    try:
        yield
    except ca.PkiError as exc:
        raise CliError(exc.message) from exc


@app.command("init")
def init(
    pki_dir: DirOpt,
    common_name: Annotated[str, typer.Option("--cn", help="the CA's common name")] = (
        "Ferry cluster CA"
    ),
    days: Annotated[int, typer.Option(min=1, help="validity in days")] = 3650,
    force: ForceOpt = False,
) -> None:
    """Create the cluster CA (ECDSA P-256). Prints the files written."""
    with _one_line_errors():
        cert = ca.init_ca(pki_dir, common_name, days, force=force)
    typer.echo(cert)
    typer.echo(cert.with_name("ca-key.pem"))


@app.command("issue")
def issue(
    name: Annotated[str, typer.Argument(help="host name; the CN and first DNS name")],
    pki_dir: DirOpt,
    dns: Annotated[list[str] | None, typer.Option("--dns", help="another DNS name")] = None,
    ip: Annotated[list[str] | None, typer.Option("--ip", help="an IP address")] = None,
    kind: Annotated[CertKind, typer.Option(help="the subject's OU")] = CertKind.HOST,
    days: Annotated[int, typer.Option(min=1, help="validity in days")] = 825,
    force: ForceOpt = False,
) -> None:
    """Issue a certificate for server and client use. Prints the files written."""
    with _one_line_errors():
        issued = ca.issue(
            pki_dir, name, dns=dns or [], ips=ip or [], kind=kind, days=days, force=force
        )
    for path in issued.paths:
        typer.echo(path)


@app.command("show")
def show(
    path: Annotated[Path, typer.Argument(help="a PEM certificate")],
    pki_dir: Annotated[
        Path | None, typer.Option("--dir", help="also verify against this PKI directory's CA")
    ] = None,
    fmt: FormatOpt = Format.TABLE,
) -> None:
    """Subject, SANs, usages, validity, issuer; with --dir, whether the CA verifies it (if it
    does not, the details are printed and the command fails)."""
    with _one_line_errors():
        summary = describe(path)
    problem = _verify(pki_dir, path)
    if fmt is Format.JSON:
        verified = None if pki_dir is None else problem is None
        emit_json({**summary.to_json(), "verified": verified, "verify_error": problem})
    else:
        _print_summary(summary, pki_dir, problem)
    if problem is not None:
        raise CliError(problem)


def _verify(pki_dir: Path | None, path: Path) -> str | None:
    if pki_dir is None:
        return None
    try:
        ca.verify(pki_dir, path)
    except ca.PkiError as exc:
        return exc.message
    return None


def _print_summary(summary: CertSummary, pki_dir: Path | None, problem: str | None) -> None:
    if pki_dir is None:
        verified = "not checked (no --dir)"
    else:
        verified = "no" if problem else f"yes, by the CA in {pki_dir}"
    rows = [
        ("certificate", summary.path),
        ("subject", f"{summary.subject}  (as QEMU tls-authz matches it)"),
        ("issuer", summary.issuer),
        ("kind", summary.kind or "-"),
        ("CA", "yes" if summary.is_ca else "no"),
        ("DNS", ", ".join(summary.dns) or "-"),
        ("IP", ", ".join(summary.ips) or "-"),
        ("key usage", ", ".join(summary.key_usage) or "-"),
        ("ext. usage", ", ".join(summary.extended_key_usage) or "-"),
        ("valid", _validity(summary)),
        ("serial", summary.serial),
        ("sha256", summary.sha256),
        ("verified", verified),
    ]
    for label, value in rows:
        typer.echo(f"{label:<12} {value}")


def _validity(summary: CertSummary) -> str:
    now = datetime.now(UTC)
    span = f"{summary.not_before:%Y-%m-%d %H:%M} .. {summary.not_after:%Y-%m-%d %H:%M} UTC"
    if now < summary.not_before:
        return f"{span} (not yet valid)"
    if now > summary.not_after:
        return f"{span} (expired {(now - summary.not_after).days} days ago)"
    return f"{span} (expires in {(summary.not_after - now).days} days)"
