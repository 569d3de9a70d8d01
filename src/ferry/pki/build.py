"""Building and signing certificates: the X.509 profile of the cluster CA and its leaves.

CA: ECDSA P-256, BasicConstraints(ca, pathlen 0) and KeyUsage(keyCertSign, cRLSign), both
critical, and a SubjectKeyIdentifier. Leaves: BasicConstraints(not a CA) and
KeyUsage(digitalSignature, keyAgreement), critical; ExtendedKeyUsage serverAuth and clientAuth;
SubjectAltName; SubjectKeyIdentifier; AuthorityKeyIdentifier from the CA's. Signed with SHA-256.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID

from ferry.pki import names
from ferry.pki.store import PkiError

CLOCK_SKEW = timedelta(minutes=5)  # certificates start this far in the past


def new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _ski(key: ec.EllipticCurvePrivateKey) -> x509.SubjectKeyIdentifier:
    return x509.SubjectKeyIdentifier.from_public_key(key.public_key())


def validity(
    now: datetime, days: int, ca_cert: x509.Certificate | None = None
) -> tuple[datetime, datetime]:
    """From a little before `now` for `days`, but never beyond the CA's own end of validity."""
    not_after = now + timedelta(days=days)
    if ca_cert is not None:
        if now > ca_cert.not_valid_after_utc:
            raise PkiError(f"the CA expired on {ca_cert.not_valid_after_utc:%Y-%m-%d} UTC")
        not_after = min(not_after, ca_cert.not_valid_after_utc)
    return now - CLOCK_SKEW, not_after


def sign(
    builder: x509.CertificateBuilder,
    signer: ec.EllipticCurvePrivateKey,
    validity: tuple[datetime, datetime],
) -> x509.Certificate:
    return (
        builder.serial_number(x509.random_serial_number())
        .not_valid_before(validity[0])
        .not_valid_after(validity[1])
        .sign(signer, hashes.SHA256())
    )


def _key_usage(*, ca: bool) -> x509.KeyUsage:
    """CA: keyCertSign, cRLSign. Leaf: digitalSignature (ECDHE-ECDSA), keyAgreement."""
    return x509.KeyUsage(
        digital_signature=not ca,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=not ca,
        key_cert_sign=ca,
        crl_sign=ca,
        encipher_only=False,
        decipher_only=False,
    )


def ca_builder(key: ec.EllipticCurvePrivateKey, cn: str) -> x509.CertificateBuilder:
    name = names.subject(cn)
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(ca=True), critical=True)
        .add_extension(_ski(key), critical=False)
    )


def leaf_builder(
    key: ec.EllipticCurvePrivateKey,
    subject: x509.Name,
    alt_names: x509.SubjectAlternativeName,
    ca_cert: x509.Certificate,
) -> x509.CertificateBuilder:
    eku = x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH])
    ca_ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(ca=False), critical=True)
        .add_extension(eku, critical=False)
        .add_extension(alt_names, critical=False)
        .add_extension(_ski(key), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski),
            critical=False,
        )
    )
