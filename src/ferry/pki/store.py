"""PKI files on disk: where they live, how they are written, how they are read back.

Every file is written to a temporary name in its final directory and then moved into place, so a
reader never sees half a key or half a certificate. The temporary file is created with its final
mode (O_CREAT | O_EXCL, mode 0600 for keys), so a private key is never readable by anyone but the
owner, not even for an instant. Without `overwrite`, the move is a hard link, which fails if the
target exists: two concurrent writers cannot silently replace each other's files.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from ferry.domain.errors import FerryError

KEY_MODE = 0o600
CERT_MODE = 0o644
DIR_MODE = 0o700


class PkiError(FerryError):
    """A PKI operation cannot be done as asked; the message says why, in one line."""

    code = "pki_error"


@dataclass(frozen=True)
class CaFiles:
    """The CA of a PKI directory: DIR/ca-cert.pem and DIR/ca-key.pem."""

    pki_dir: Path

    @property
    def cert(self) -> Path:
        return self.pki_dir / "ca-cert.pem"

    @property
    def key(self) -> Path:
        return self.pki_dir / "ca-key.pem"

    def issued_dir(self, name: str) -> Path:
        return self.pki_dir / "issued" / name


def ensure_dir(path: Path) -> Path:
    """Create `path` (mode 0700 for directories made here; existing ones are left alone)."""
    try:
        path.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    except OSError as exc:
        raise PkiError(f"cannot create directory {path}: {exc.strerror}") from exc
    return path


def write_file(path: Path, data: bytes, *, mode: int, overwrite: bool) -> None:
    """Atomically put `data` at `path` with permissions `mode` (see the module docstring)."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(tmp, flags, mode)
    except OSError as exc:
        raise PkiError(f"cannot write {path}: {exc.strerror}") from exc
    try:
        with os.fdopen(fd, "wb") as handle:
            os.fchmod(handle.fileno(), mode)  # the umask may have narrowed it: make it exact
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        if overwrite:
            tmp.replace(path)
        else:
            path.hardlink_to(tmp)
    except FileExistsError as exc:
        raise PkiError(f"{path} already exists; pass --force to replace it") from exc
    except OSError as exc:
        raise PkiError(f"cannot write {path}: {exc.strerror}") from exc
    finally:
        tmp.unlink(missing_ok=True)


def write_key(path: Path, key: ec.EllipticCurvePrivateKey, *, overwrite: bool) -> None:
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    write_file(path, pem, mode=KEY_MODE, overwrite=overwrite)


def write_cert(path: Path, cert: x509.Certificate, *, overwrite: bool) -> None:
    write_file(
        path, cert.public_bytes(serialization.Encoding.PEM), mode=CERT_MODE, overwrite=overwrite
    )


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise PkiError(f"cannot read {what} {path}: {exc.strerror}") from exc


def read_cert(path: Path) -> x509.Certificate:
    """The first certificate of a PEM file."""
    data = _read(path, "certificate")
    try:
        return x509.load_pem_x509_certificate(data)
    except ValueError as exc:
        raise PkiError(f"{path} is not a PEM certificate") from exc


def read_key(path: Path) -> ec.EllipticCurvePrivateKey:
    """An unencrypted PEM EC private key."""
    data = _read(path, "private key")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise PkiError(f"{path} is not an unencrypted PEM private key") from exc
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise PkiError(f"{path} holds a {type(key).__name__}, not an EC private key")
    return key


def check_pair(cert: x509.Certificate, key: ec.EllipticCurvePrivateKey, where: Path) -> None:
    """Refuse a certificate whose public key is not the key's."""
    if cert.public_key() != key.public_key():
        raise PkiError(f"the certificate and private key in {where} do not belong together")
