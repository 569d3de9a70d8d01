"""Validated names for certificates: subjects, kinds, DNS and IP subject alternative names."""

from __future__ import annotations

import ipaddress
import re
import unicodedata
from collections.abc import Iterable
from enum import StrEnum

from cryptography import x509
from cryptography.x509.oid import NameOID

from ferry.domain.errors import InvalidInput
from ferry.domain.validation import host_name
from ferry.pki.store import PkiError

ORGANIZATION = "Ferry"
_DNS_LABEL = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
_DNS_MAX = 253
_CN_MAX = 64  # X.509 upper bound for commonName


class CertKind(StrEnum):
    """Who holds a certificate; it is the subject's OU, so DNs tell the kinds apart."""

    HOST = "host"
    CONTROLLER = "controller"
    CLIENT = "client"


def cert_kind(kind: str) -> CertKind:
    try:
        return CertKind(kind)
    except ValueError:
        choices = ", ".join(k.value for k in CertKind)
        raise PkiError(f"invalid certificate kind {kind!r}: use one of {choices}") from None


def cert_name(name: str) -> str:
    """A certificate name is a host name (it is also the first DNS SAN and a directory name)."""
    try:
        host_name(name)
    except InvalidInput as exc:
        raise PkiError(exc.message) from exc
    return dns_name(name)


def dns_name(name: str) -> str:
    """A DNS name of 1-253 characters: dot-separated labels of letters, digits and '-'."""
    value = name.strip().lower().removesuffix(".")
    labels = value.split(".")
    if not value or len(value) > _DNS_MAX or not all(_DNS_LABEL.fullmatch(x) for x in labels):
        raise PkiError(
            f"invalid DNS name {name!r}: use dot-separated labels of 1-63 letters, digits"
            " or '-', not starting or ending with '-'"
        )
    return value


def ip_address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    try:
        return ipaddress.ip_address(text.strip())
    except ValueError:
        raise PkiError(f"invalid IP address {text!r}: use an IPv4 or IPv6 address") from None


def common_name(text: str) -> str:
    """A CA's common name: 1-64 printable characters."""
    value = text.strip()
    if not value or len(value) > _CN_MAX:
        raise PkiError(f"invalid common name {text!r}: use 1-{_CN_MAX} characters")
    if any(unicodedata.category(ch).startswith("C") for ch in value):
        raise PkiError(f"invalid common name {text!r}: no control characters")
    return value


def subject(common: str, unit: str | None = None) -> x509.Name:
    """O=Ferry[, OU=unit], CN=common, encoded in that order."""
    attributes = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORGANIZATION)]
    if unit is not None:
        attributes.append(x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, unit))
    attributes.append(x509.NameAttribute(NameOID.COMMON_NAME, common))
    return x509.Name(attributes)


def alt_names(name: str, dns: Iterable[str], ips: Iterable[str]) -> x509.SubjectAlternativeName:
    """DNS SANs (`name` first, then `dns`) and IP SANs, validated and without duplicates."""
    names = list(dict.fromkeys([name, *(dns_name(d) for d in dns)]))
    addresses = list(dict.fromkeys(ip_address(a) for a in ips))
    entries: list[x509.GeneralName] = [x509.DNSName(n) for n in names]
    entries.extend(x509.IPAddress(a) for a in addresses)
    return x509.SubjectAlternativeName(entries)


def gnutls_dn(name: x509.Name) -> str:
    """`name` as gnutls_x509_crt_get_dn() prints it, hence as QEMU's tls-authz matches it: RDNs in
    encoding order ("O=Ferry,OU=host,CN=host1"), each attribute escaped as in RFC 4514."""
    return ",".join("+".join(attr.rfc4514_string() for attr in rdn) for rdn in name.rdns)
