"""What a certificate says, for people (`ferry pki show`) and scripts (its JSON)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from ferry.pki.names import gnutls_dn
from ferry.pki.store import read_cert

_Ext = TypeVar("_Ext", bound=x509.ExtensionType)
_KEY_USAGES = (
    "digital_signature",
    "content_commitment",
    "key_encipherment",
    "data_encipherment",
    "key_agreement",
    "key_cert_sign",
    "crl_sign",
)
_EKU_NAMES = {
    ExtendedKeyUsageOID.SERVER_AUTH: "serverAuth",
    ExtendedKeyUsageOID.CLIENT_AUTH: "clientAuth",
    ExtendedKeyUsageOID.CODE_SIGNING: "codeSigning",
    ExtendedKeyUsageOID.EMAIL_PROTECTION: "emailProtection",
    ExtendedKeyUsageOID.TIME_STAMPING: "timeStamping",
    ExtendedKeyUsageOID.OCSP_SIGNING: "OCSPSigning",
}


@dataclass(frozen=True)
class CertSummary:
    path: str
    subject: str  # as QEMU's tls-authz matches it (see ca.distinguished_name)
    issuer: str
    kind: str | None  # the subject's OU
    serial: str
    sha256: str
    is_ca: bool
    dns: list[str]
    ips: list[str]
    key_usage: list[str]
    extended_key_usage: list[str]
    not_before: datetime
    not_after: datetime

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["not_before"] = self.not_before.isoformat()
        data["not_after"] = self.not_after.isoformat()
        return data


def describe(cert_path: Path) -> CertSummary:
    cert = read_cert(Path(cert_path))
    sans = _extension(cert, x509.SubjectAlternativeName)
    units = cert.subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)
    constraints = _extension(cert, x509.BasicConstraints)
    return CertSummary(
        path=str(cert_path),
        subject=gnutls_dn(cert.subject),
        issuer=gnutls_dn(cert.issuer),
        kind=str(units[0].value) if units else None,
        serial=f"{cert.serial_number:x}",
        sha256=cert.fingerprint(hashes.SHA256()).hex(":").upper(),
        is_ca=bool(constraints and constraints.ca),
        dns=sans.get_values_for_type(x509.DNSName) if sans else [],
        ips=[str(a) for a in sans.get_values_for_type(x509.IPAddress)] if sans else [],
        key_usage=_key_usage(cert),
        extended_key_usage=_extended_key_usage(cert),
        not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc,
    )


def _extension(cert: x509.Certificate, kind: type[_Ext]) -> _Ext | None:
    try:
        return cert.extensions.get_extension_for_class(kind).value
    except x509.ExtensionNotFound:
        return None


def _key_usage(cert: x509.Certificate) -> list[str]:
    usage = _extension(cert, x509.KeyUsage)
    return [name for name in _KEY_USAGES if usage is not None and getattr(usage, name)]


def _extended_key_usage(cert: x509.Certificate) -> list[str]:
    usage = _extension(cert, x509.ExtendedKeyUsage)
    return [_EKU_NAMES.get(oid, oid.dotted_string) for oid in usage or []]
