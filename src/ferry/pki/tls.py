"""ssl.SSLContext for mutual TLS inside the cluster (controller <-> agents).

Every context requires TLS 1.2 at least (1.3 is negotiated whenever both ends have it), a
certificate from the peer, and trusts nothing but what it is given: never the system's CAs.

- `ssl_context_server`: a server that admits any client certificate signed by the cluster CA.
- `ssl_context_server_pinned`: a server that admits exactly one client certificate (an agent
  admits only the controller, although every host holds a certificate from the same CA).
- `ssl_context_client`: a client that trusts the cluster CA, presents its own certificate, and
  checks the server's name (DNS or IP SAN) against the host it connects to.
"""

from __future__ import annotations

import ssl
from pathlib import Path

from cryptography import x509

from ferry.pki.store import PkiError, read_cert


def ssl_context_server(*, cert: Path, key: Path, ca: Path) -> ssl.SSLContext:
    """A server that requires a client certificate signed by the CA in `ca`."""
    ctx = _context(ssl.PROTOCOL_TLS_SERVER, cert, key)
    ctx.verify_mode = ssl.CERT_REQUIRED
    _trust(ctx, ca)
    return ctx


def ssl_context_server_pinned(*, cert: Path, key: Path, peer: Path) -> ssl.SSLContext:
    """A server that requires exactly the client certificate in `peer` (say the controller's).

    Only `peer` itself is trusted, as a partial chain (VERIFY_X509_PARTIAL_CHAIN): OpenSSL
    accepts a presented certificate only if it is that very certificate (compared whole), still
    valid, and usable for client authentication. Other certificates of the same CA are refused in
    the handshake. `peer` must not be a CA certificate: pinning a CA would admit all it signed.
    """
    if _is_ca(read_cert(Path(peer))):
        raise PkiError(f"{peer} is a CA certificate; pin the peer's own certificate (cert.pem)")
    ctx = _context(ssl.PROTOCOL_TLS_SERVER, cert, key)
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
    _trust(ctx, peer)
    return ctx


def ssl_context_client(*, cert: Path, key: Path, ca: Path) -> ssl.SSLContext:
    """A client that trusts the CA in `ca`, presents `cert`, and checks the server's name."""
    ctx = _context(ssl.PROTOCOL_TLS_CLIENT, cert, key)
    ctx.check_hostname = True
    ctx.verify_mode = ssl.CERT_REQUIRED
    _trust(ctx, ca)
    return ctx


def _context(protocol: int, cert: Path, key: Path) -> ssl.SSLContext:
    ctx = ssl.SSLContext(protocol)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION
    try:
        ctx.load_cert_chain(certfile=cert, keyfile=key)
    except (OSError, ssl.SSLError) as exc:
        raise PkiError(f"cannot load certificate {cert} with key {key}: {_reason(exc)}") from exc
    return ctx


def _trust(ctx: ssl.SSLContext, path: Path) -> None:
    try:
        ctx.load_verify_locations(cafile=path)
    except (OSError, ssl.SSLError) as exc:
        raise PkiError(f"cannot load trusted certificate {path}: {_reason(exc)}") from exc


def _reason(exc: OSError) -> str:
    return getattr(exc, "reason", None) or exc.strerror or str(exc)


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        return cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        return False
