"""The cluster CA: create it, issue host/controller/client certificates, verify them, and lay
out credentials for QEMU.

Pure CPU and file work, synchronous: asyncio callers wrap calls in `asyncio.to_thread`.

Layout of a PKI directory (keys 0600, directories created 0700)::

    DIR/ca-cert.pem                 the CA certificate (ECDSA P-256, self-signed)
    DIR/ca-key.pem                  its private key: stays on the machine that issues
    DIR/issued/NAME/cert.pem        NAME's certificate, signed by the CA
    DIR/issued/NAME/key.pem         NAME's private key
    DIR/issued/NAME/ca.pem          a copy of ca-cert.pem: the directory is a complete bundle
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ec

from ferry.pki import build, names
from ferry.pki.names import CertKind
from ferry.pki.store import (
    CERT_MODE,
    KEY_MODE,
    CaFiles,
    PkiError,
    check_pair,
    ensure_dir,
    read_cert,
    read_key,
    write_cert,
    write_file,
    write_key,
)

__all__ = [
    "CertKind",
    "IssuedCert",
    "PkiError",
    "distinguished_name",
    "dn_glob",
    "init_ca",
    "issue",
    "qemu_creds_dir",
    "verify",
]

QEMU_FILES = (
    "ca-cert.pem",
    "server-cert.pem",
    "server-key.pem",
    "client-cert.pem",
    "client-key.pem",
)


@dataclass(frozen=True)
class IssuedCert:
    """The files of one issued certificate: DIR/issued/NAME/{cert,key,ca}.pem."""

    name: str
    directory: Path

    @classmethod
    def at(cls, pki_dir: Path, name: str) -> IssuedCert:
        return cls(name, CaFiles(pki_dir).issued_dir(name))

    @property
    def cert(self) -> Path:
        return self.directory / "cert.pem"

    @property
    def key(self) -> Path:
        return self.directory / "key.pem"

    @property
    def ca(self) -> Path:
        return self.directory / "ca.pem"

    @property
    def paths(self) -> tuple[Path, Path, Path]:
        return self.cert, self.key, self.ca


def init_ca(
    pki_dir: Path,
    common_name: str = "Ferry cluster CA",
    days: int = 3650,
    *,
    force: bool = False,
    now: datetime | None = None,
) -> Path:
    """Create the cluster CA in `pki_dir` and return the path of its certificate.

    Refuses if a CA (either file) is already there, unless `force`: replacing the CA invalidates
    every certificate it issued.
    """
    files = CaFiles(Path(pki_dir))
    cn = names.common_name(common_name)
    _check_days(days)
    present = [p for p in (files.cert, files.key) if p.exists()]
    if present and not force:
        raise PkiError(
            f"a CA already exists in {files.pki_dir} ({present[0].name}); pass --force to"
            " replace it, which invalidates every certificate it issued"
        )
    key = build.new_key()
    cert = build.sign(build.ca_builder(key, cn), key, build.validity(_now(now), days))
    ensure_dir(files.pki_dir)
    write_key(files.key, key, overwrite=force)
    write_cert(files.cert, cert, overwrite=force)
    return files.cert


def issue(
    pki_dir: Path,
    name: str,
    *,
    dns: Sequence[str] = (),
    ips: Sequence[str] = (),
    kind: CertKind | str = CertKind.HOST,
    days: int = 825,
    force: bool = False,
    now: datetime | None = None,
) -> IssuedCert:
    """Issue a certificate for `name` (CN=name, OU=kind, O=Ferry) signed by the CA in `pki_dir`.

    SANs: DNS `name` plus `dns`, and IP `ips`. Usable as TLS server and client (one host
    certificate serves QEMU migration in both directions and the agent's HTTPS server). Validity
    is capped at the CA's. Refuses to replace an issued certificate unless `force`.
    """
    name = names.cert_name(name)
    cert_kind = names.cert_kind(kind)
    alt_names = names.alt_names(name, dns, ips)
    _check_days(days)
    files = CaFiles(Path(pki_dir))
    ca_cert, ca_key = _load_ca(files)
    issued = IssuedCert.at(files.pki_dir, name)
    if issued.cert.exists() and not force:
        raise PkiError(f"{name} already has a certificate in {issued.directory}; pass --force")
    key = build.new_key()
    validity = build.validity(_now(now), days, ca_cert)
    builder = build.leaf_builder(key, names.subject(name, cert_kind.value), alt_names, ca_cert)
    cert = build.sign(builder, ca_key, validity)
    ensure_dir(issued.directory)
    write_key(issued.key, key, overwrite=force)
    write_cert(issued.cert, cert, overwrite=force)
    write_cert(issued.ca, ca_cert, overwrite=True)
    return issued


def qemu_creds_dir(pki_dir: Path, name: str, dest: Path) -> Path:
    """Lay out `dest` for QEMU's `-object tls-creds-x509,dir=DEST,...` and return it.

    It holds exactly ca-cert.pem, server-cert.pem, server-key.pem, client-cert.pem and
    client-key.pem: NAME's one certificate and key serve as both server (migration destination)
    and client (source). Keys are 0600. `dest` must hold nothing else: QEMU would also read a
    ca-crl.pem or dh-params.pem found there.
    """
    issued = IssuedCert.at(Path(pki_dir), names.cert_name(name))
    cert_pem, key_pem, ca_pem = (_read_bytes(p) for p in issued.paths)
    check_pair(read_cert(issued.cert), read_key(issued.key), issued.directory)
    dest = ensure_dir(Path(dest))
    others = sorted(p.name for p in dest.iterdir() if p.name not in QEMU_FILES)
    if others:
        raise PkiError(
            f"{dest} holds other files ({', '.join(others)}); use a directory of its own"
        )
    contents = {
        "ca-cert.pem": (ca_pem, CERT_MODE),
        "server-cert.pem": (cert_pem, CERT_MODE),
        "server-key.pem": (key_pem, KEY_MODE),
        "client-cert.pem": (cert_pem, CERT_MODE),
        "client-key.pem": (key_pem, KEY_MODE),
    }
    for file_name, (data, mode) in contents.items():
        write_file(dest / file_name, data, mode=mode, overwrite=True)
    return dest


def distinguished_name(cert_path: Path) -> str:
    """The subject DN exactly as QEMU's tls-authz matches it: "O=Ferry,OU=host,CN=host1".

    QEMU (crypto/tlssession.c) names a TLS client by gnutls_x509_crt_get_dn(), and authz-simple
    (identity=...) and authz-list rules with format=exact compare that string byte for byte. That
    function keeps the certificate's encoding order (most general RDN first: O, OU, CN for
    Ferry), joins RDNs with "," and no spaces, writes attributes by short name (CN, OU, O, C, L,
    ST, DC, UID) and escapes values RFC 4514 style. It is NOT the RFC 4514 order (most specific
    first) that `certtool -i`, `openssl x509 -nameopt RFC2253` and cryptography's
    Name.rfc4514_string() print: those show "CN=host1,OU=host,O=Ferry", which QEMU denies.

    Checked by hand on this machine (QEMU 7.2.22, GnuTLS 3.7.9): gnutls_x509_crt_get_dn() called
    through ctypes returns "O=Ferry,OU=host,CN=host2"; qemu-nbd with --tls-authz admits a client
    presenting host2's certificate with authz-simple identity "O=Ferry,OU=host,CN=host2", and
    denies it with "CN=host2,OU=host,O=Ferry" ("TLS x509 authz check for O=Ferry,OU=host,CN=host2
    is denied"); an authz-list glob rule "O=Ferry,OU=host,CN=*" (see `dn_glob`) admits host2 and
    denies the controller ("O=Ferry,OU=controller,CN=ctl"). On a QEMU command line each "," of a
    DN must be doubled (identity=O=Ferry,,OU=host,,CN=host2); QMP object-add takes it as is.
    """
    return names.gnutls_dn(read_cert(Path(cert_path)).subject)


def dn_glob(kind: CertKind | str = CertKind.HOST) -> str:
    """An authz-list glob rule admitting every certificate of one kind: "O=Ferry,OU=host,CN=*"."""
    unit = names.cert_kind(kind).value
    return names.gnutls_dn(names.subject("*", unit))


def verify(pki_dir: Path, cert_path: Path, *, now: datetime | None = None) -> None:
    """Raise PkiError unless `cert_path` is signed by the CA in `pki_dir` and valid `now`."""
    ca_cert = read_cert(CaFiles(Path(pki_dir)).cert)
    cert = read_cert(Path(cert_path))
    try:
        cert.verify_directly_issued_by(ca_cert)
    except (ValueError, TypeError, InvalidSignature) as exc:
        raise PkiError(
            f"{cert_path} is not signed by the CA in {pki_dir}"
            f" (its issuer is {names.gnutls_dn(cert.issuer)})"
        ) from exc
    moment = _now(now)
    for what, checked in (("the CA certificate", ca_cert), (str(cert_path), cert)):
        _check_validity(what, checked, moment)


def _check_validity(what: str, cert: x509.Certificate, moment: datetime) -> None:
    if moment < cert.not_valid_before_utc:
        raise PkiError(f"{what} is not valid before {cert.not_valid_before_utc:%Y-%m-%d %H:%M} UTC")
    if moment > cert.not_valid_after_utc:
        raise PkiError(f"{what} expired on {cert.not_valid_after_utc:%Y-%m-%d %H:%M} UTC")


def _now(now: datetime | None) -> datetime:
    return now if now is not None else datetime.now(UTC)


def _check_days(days: int) -> None:
    if days < 1:
        raise PkiError(f"validity must be at least 1 day, not {days}")


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise PkiError(f"cannot read {path}: {exc.strerror}") from exc


def _load_ca(files: CaFiles) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    if not files.cert.exists():
        raise PkiError(
            f"no CA in {files.pki_dir}; create one with: ferry pki init --dir {files.pki_dir}"
        )
    ca_cert, ca_key = read_cert(files.cert), read_key(files.key)
    check_pair(ca_cert, ca_key, files.pki_dir)
    return ca_cert, ca_key
