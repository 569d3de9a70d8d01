"""The cluster PKI with real keys, real files and real TLS handshakes over 127.0.0.1."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import os
import re
import ssl
import stat
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from ferry.pki import ca, store
from ferry.pki.ca import IssuedCert, PkiError
from ferry.pki.describe import describe
from ferry.pki.tls import ssl_context_client, ssl_context_server, ssl_context_server_pinned


def _cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _ext(cert: x509.Certificate, kind: type[Any]) -> x509.Extension[Any]:
    return cert.extensions.get_extension_for_class(kind)


@contextlib.contextmanager
def _umask(mask: int) -> Iterator[None]:
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


@pytest.fixture
def pki(tmp_path: Path) -> Path:
    directory = tmp_path / "pki"
    ca.init_ca(directory)
    return directory


# --- the CA ----------------------------------------------------------------------------------


def test_init_ca_writes_a_p256_ca_with_the_required_extensions(tmp_path: Path) -> None:
    directory = tmp_path / "pki"
    with _umask(0):  # even a wide-open umask must not widen the key's or the directory's mode
        cert_path = ca.init_ca(directory, "Test CA", days=30)
    assert cert_path == directory / "ca-cert.pem"
    assert sorted(p.name for p in directory.iterdir()) == ["ca-cert.pem", "ca-key.pem"]
    assert (_mode(directory / "ca-key.pem"), _mode(cert_path), _mode(directory)) == (
        0o600,
        0o644,
        0o700,
    )
    cert = _cert(cert_path)
    assert cert.subject.rfc4514_string() == "CN=Test CA,O=Ferry"
    assert cert.issuer == cert.subject
    cert.verify_directly_issued_by(cert)  # self-signed
    public = cert.public_key()
    assert isinstance(public, ec.EllipticCurvePublicKey)
    assert public.curve.name == "secp256r1"
    constraints = _ext(cert, x509.BasicConstraints)
    assert constraints.critical
    assert (constraints.value.ca, constraints.value.path_length) == (True, 0)
    usage = _ext(cert, x509.KeyUsage)
    assert usage.critical
    assert usage.value.key_cert_sign and usage.value.crl_sign
    assert not usage.value.digital_signature
    assert _ext(cert, x509.SubjectKeyIdentifier).value.digest == (
        x509.SubjectKeyIdentifier.from_public_key(public).digest
    )
    lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
    assert timedelta(days=30) < lifetime <= timedelta(days=30, minutes=6)
    key = store.read_key(directory / "ca-key.pem")
    assert key.public_key() == public


def test_private_keys_are_created_0600_never_wider(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    created: list[tuple[str, int, int]] = []
    real_open = os.open

    def spy(path: Any, flags: int, mode: int = 0o777, **kwargs: Any) -> int:
        created.append((str(path), flags, mode))
        return real_open(path, flags, mode, **kwargs)

    monkeypatch.setattr(os, "open", spy)
    with _umask(0):
        ca.init_ca(tmp_path)
        ca.issue(tmp_path, "host1")
    key_files = [(p, f, m) for p, f, m in created if Path(p).name.startswith(".key.pem")]
    key_files += [(p, f, m) for p, f, m in created if Path(p).name.startswith(".ca-key.pem")]
    assert len(key_files) == 2
    for _, flags, mode in key_files:
        assert mode == 0o600
        assert flags & os.O_CREAT and flags & os.O_EXCL
    assert [p.name for p in tmp_path.rglob(".*")] == []  # no temporary file left behind


def test_init_ca_refuses_an_existing_ca_unless_forced(pki: Path) -> None:
    before = (pki / "ca-key.pem").read_bytes(), (pki / "ca-cert.pem").read_bytes()
    with pytest.raises(PkiError, match=r"a CA already exists in .*pass --force") as caught:
        ca.init_ca(pki)
    assert caught.value.code == "pki_error"
    assert ((pki / "ca-key.pem").read_bytes(), (pki / "ca-cert.pem").read_bytes()) == before
    (pki / "ca-cert.pem").unlink()  # half a CA is still a CA: the key alone blocks init
    with pytest.raises(PkiError, match=r"\(ca-key.pem\)"):
        ca.init_ca(pki)
    ca.init_ca(pki, force=True)
    assert (pki / "ca-key.pem").read_bytes() != before[0]
    assert _mode(pki / "ca-key.pem") == 0o600
    _cert(pki / "ca-cert.pem").verify_directly_issued_by(_cert(pki / "ca-cert.pem"))


@pytest.mark.parametrize(("common_name", "days"), [("", 10), ("x" * 65, 10), ("ok", 0)])
def test_init_ca_rejects_bad_parameters(tmp_path: Path, common_name: str, days: int) -> None:
    with pytest.raises(PkiError, match=r"invalid common name|at least 1 day"):
        ca.init_ca(tmp_path / "pki", common_name, days)
    assert not (tmp_path / "pki").exists()


def test_unwritable_places_are_reported_as_pki_errors(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a directory")
    with pytest.raises(PkiError, match=r"cannot create directory .*file/pki: Not a directory"):
        ca.init_ca(tmp_path / "file" / "pki")
    with pytest.raises(PkiError, match=r"cannot write .*file/x.pem: Not a directory"):
        store.write_file(tmp_path / "file" / "x.pem", b"x", mode=0o600, overwrite=True)


# --- issuing ---------------------------------------------------------------------------------


def test_issue_writes_a_server_and_client_certificate_signed_by_the_ca(pki: Path) -> None:
    issued = ca.issue(
        pki, "host1", dns=["host1.lab.example", "HOST1.alt."], ips=["198.18.0.1", "fd00::1"]
    )
    directory = pki / "issued" / "host1"
    assert issued == IssuedCert("host1", directory)
    assert issued.paths == (directory / "cert.pem", directory / "key.pem", directory / "ca.pem")
    assert (_mode(issued.key), _mode(issued.cert), _mode(directory)) == (0o600, 0o644, 0o700)
    assert issued.ca.read_bytes() == (pki / "ca-cert.pem").read_bytes()

    cert, ca_cert = _cert(issued.cert), _cert(pki / "ca-cert.pem")
    cert.verify_directly_issued_by(ca_cert)
    assert cert.issuer == ca_cert.subject
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "host1"
    assert cert.subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)[0].value == "host"
    assert cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == "Ferry"
    sans = _ext(cert, x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == ["host1", "host1.lab.example", "host1.alt"]
    assert sans.get_values_for_type(x509.IPAddress) == [
        ipaddress.ip_address("198.18.0.1"),
        ipaddress.ip_address("fd00::1"),
    ]
    assert list(_ext(cert, x509.ExtendedKeyUsage).value) == [
        ExtendedKeyUsageOID.SERVER_AUTH,
        ExtendedKeyUsageOID.CLIENT_AUTH,
    ]
    usage = _ext(cert, x509.KeyUsage)
    assert usage.critical and usage.value.digital_signature and usage.value.key_agreement
    assert not usage.value.key_cert_sign
    assert _ext(cert, x509.BasicConstraints).value.ca is False
    assert _ext(cert, x509.AuthorityKeyIdentifier).value.key_identifier == (
        _ext(ca_cert, x509.SubjectKeyIdentifier).value.digest
    )
    assert store.read_key(issued.key).public_key() == cert.public_key()
    lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
    assert timedelta(days=825) < lifetime <= timedelta(days=825, minutes=6)


def test_the_kind_is_the_ou_so_controller_and_hosts_differ_by_dn(pki: Path) -> None:
    host = ca.issue(pki, "host1")
    controller = ca.issue(pki, "controller", kind="controller")
    client = ca.issue(pki, "alice", kind=ca.CertKind.CLIENT)
    assert ca.distinguished_name(host.cert) == "O=Ferry,OU=host,CN=host1"
    assert ca.distinguished_name(controller.cert) == "O=Ferry,OU=controller,CN=controller"
    assert ca.distinguished_name(client.cert) == "O=Ferry,OU=client,CN=alice"
    assert ca.distinguished_name(pki / "ca-cert.pem") == "O=Ferry,CN=Ferry cluster CA"
    assert ca.dn_glob() == "O=Ferry,OU=host,CN=*"
    assert ca.dn_glob("controller") == "O=Ferry,OU=controller,CN=*"


def test_distinguished_name_is_in_encoding_order_not_rfc4514_order(pki: Path) -> None:
    """QEMU matches gnutls_x509_crt_get_dn(), which keeps the encoding order (see the
    docstring of distinguished_name for the hand check against QEMU 7.2 / GnuTLS 3.7.9)."""
    cert = _cert(ca.issue(pki, "host1").cert)
    assert [rdn.rfc4514_string() for rdn in cert.subject.rdns] == ["O=Ferry", "OU=host", "CN=host1"]
    assert cert.subject.rfc4514_string() == "CN=host1,OU=host,O=Ferry"  # what QEMU would deny


@pytest.mark.parametrize(
    ("name", "kwargs", "message"),
    [
        ("host1", {"ips": ["1.2.3"]}, "invalid IP address '1.2.3'"),
        ("host1", {"ips": ["10.0.0.0/8"]}, "invalid IP address '10.0.0.0/8'"),
        ("host1", {"ips": ["198.18.0.1", "nope"]}, "invalid IP address 'nope'"),
        ("host1", {"dns": ["-bad.example"]}, "invalid DNS name '-bad.example'"),
        ("host1", {"dns": ["a..b"]}, "invalid DNS name 'a..b'"),
        ("host1", {"dns": ["x" * 64 + ".example"]}, "invalid DNS name"),
        ("host1", {"dns": ["héllo.example"]}, "invalid DNS name"),
        ("Host_1", {}, "invalid host name 'Host_1'"),
        ("../etc", {}, "invalid host name"),
        ("a..b", {}, "invalid DNS name 'a..b'"),
        ("host1", {"kind": "admin"}, "invalid certificate kind 'admin': use one of host, "),
        ("host1", {"days": 0}, "at least 1 day"),
    ],
)
def test_issue_rejects_bad_input_and_writes_nothing(
    pki: Path, name: str, kwargs: dict[str, Any], message: str
) -> None:
    with pytest.raises(PkiError, match=re.escape(message)):
        ca.issue(pki, name, **kwargs)
    assert not (pki / "issued").exists()


def test_issue_refuses_to_replace_a_certificate_unless_forced(pki: Path) -> None:
    first = ca.issue(pki, "host1", ips=["198.18.0.1"])
    key_before, cert_before = first.key.read_bytes(), first.cert.read_bytes()
    with pytest.raises(PkiError, match=r"host1 already has a certificate in .*; pass --force"):
        ca.issue(pki, "host1", ips=["198.18.0.2"])
    assert (first.key.read_bytes(), first.cert.read_bytes()) == (key_before, cert_before)
    again = ca.issue(pki, "host1", ips=["198.18.0.2"], force=True)
    assert again.key.read_bytes() != key_before
    sans = _ext(_cert(again.cert), x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("198.18.0.2")]
    assert _mode(again.key) == 0o600


def test_issue_needs_a_ca_and_caps_validity_at_the_cas(tmp_path: Path) -> None:
    with pytest.raises(PkiError, match=r"no CA in .*; create one with: ferry pki init --dir"):
        ca.issue(tmp_path / "empty", "host1")
    ca.init_ca(tmp_path, days=10)
    cert = _cert(ca.issue(tmp_path, "host1", days=825).cert)
    assert cert.not_valid_after_utc == _cert(tmp_path / "ca-cert.pem").not_valid_after_utc


def test_issue_refuses_a_ca_whose_key_does_not_match_its_certificate(tmp_path: Path) -> None:
    ca.init_ca(tmp_path / "a")
    ca.init_ca(tmp_path / "b")
    (tmp_path / "a" / "ca-key.pem").write_bytes((tmp_path / "b" / "ca-key.pem").read_bytes())
    with pytest.raises(PkiError, match="do not belong together"):
        ca.issue(tmp_path / "a", "host1")


# --- verification ----------------------------------------------------------------------------


def test_verify_accepts_a_certificate_of_this_ca(pki: Path) -> None:
    ca.verify(pki, ca.issue(pki, "host1").cert)
    ca.verify(pki, pki / "ca-cert.pem")


def test_verify_refuses_a_certificate_of_another_ca_with_the_same_name(
    pki: Path, tmp_path: Path
) -> None:
    other = tmp_path / "other"
    ca.init_ca(other)  # same CN and O as `pki`'s CA: only the signature tells them apart
    foreign = ca.issue(other, "host1")
    assert _cert(foreign.cert).issuer == _cert(pki / "ca-cert.pem").subject
    with pytest.raises(PkiError, match=r"is not signed by the CA in .*O=Ferry,CN=Ferry cluster"):
        ca.verify(pki, foreign.cert)
    ca.verify(other, foreign.cert)


def test_verify_refuses_an_expired_or_not_yet_valid_certificate(pki: Path) -> None:
    long_ago = datetime.now(UTC) - timedelta(days=30)
    expired = ca.issue(pki, "old", days=1, now=long_ago)
    with pytest.raises(PkiError, match=r"old/cert.pem expired on \d{4}-\d\d-\d\d"):
        ca.verify(pki, expired.cert)
    fresh = ca.issue(pki, "fresh")
    with pytest.raises(PkiError, match="is not valid before"):
        ca.verify(pki, fresh.cert, now=datetime.now(UTC) - timedelta(days=1))
    with pytest.raises(PkiError, match="the CA certificate expired on"):
        ca.verify(pki, fresh.cert, now=datetime.now(UTC) + timedelta(days=3651))


def test_verify_reports_unreadable_files(pki: Path, tmp_path: Path) -> None:
    with pytest.raises(PkiError, match=r"cannot read certificate .*missing.pem: No such file"):
        ca.verify(pki, tmp_path / "missing.pem")
    (tmp_path / "junk.pem").write_text("not a certificate\n")
    with pytest.raises(PkiError, match=r"junk.pem is not a PEM certificate"):
        ca.verify(pki, tmp_path / "junk.pem")


# --- QEMU credentials ------------------------------------------------------------------------


def test_qemu_creds_dir_holds_exactly_what_tls_creds_x509_reads(pki: Path, tmp_path: Path) -> None:
    issued = ca.issue(pki, "host1", ips=["198.18.0.1"])
    dest = ca.qemu_creds_dir(pki, "host1", tmp_path / "qemu" / "host1")
    assert dest == tmp_path / "qemu" / "host1"
    assert sorted(p.name for p in dest.iterdir()) == [
        "ca-cert.pem",
        "client-cert.pem",
        "client-key.pem",
        "server-cert.pem",
        "server-key.pem",
    ]
    assert (dest / "ca-cert.pem").read_bytes() == (pki / "ca-cert.pem").read_bytes()
    for role in ("server", "client"):
        assert (dest / f"{role}-cert.pem").read_bytes() == issued.cert.read_bytes()
        assert (dest / f"{role}-key.pem").read_bytes() == issued.key.read_bytes()
        assert _mode(dest / f"{role}-key.pem") == 0o600
        assert _mode(dest / f"{role}-cert.pem") == 0o644
    assert _mode(dest) == 0o700
    ca.issue(pki, "host1", force=True)  # re-laying out after a re-issue replaces every file
    ca.qemu_creds_dir(pki, "host1", dest)
    assert (dest / "server-key.pem").read_bytes() == issued.key.read_bytes()
    assert (dest / "server-key.pem").read_bytes() != (dest / "ca-cert.pem").read_bytes()


def test_qemu_creds_dir_refuses_a_shared_directory_and_unknown_names(
    pki: Path, tmp_path: Path
) -> None:
    ca.issue(pki, "host1")
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "dh-params.pem").write_text("stale")
    with pytest.raises(PkiError, match=r"holds other files \(dh-params.pem\)"):
        ca.qemu_creds_dir(pki, "host1", shared)
    assert sorted(p.name for p in shared.iterdir()) == ["dh-params.pem"]
    with pytest.raises(PkiError, match=r"cannot read .*issued/host9/cert.pem"):
        ca.qemu_creds_dir(pki, "host9", tmp_path / "q")


# --- describe --------------------------------------------------------------------------------


def test_describe_summarises_a_certificate(pki: Path) -> None:
    issued = ca.issue(pki, "host1", dns=["host1.lab"], ips=["198.18.0.1"], kind="host")
    summary = describe(issued.cert)
    cert = _cert(issued.cert)
    assert summary.subject == "O=Ferry,OU=host,CN=host1"
    assert summary.issuer == "O=Ferry,CN=Ferry cluster CA"
    assert (summary.kind, summary.is_ca) == ("host", False)
    assert (summary.dns, summary.ips) == (["host1", "host1.lab"], ["198.18.0.1"])
    assert summary.key_usage == ["digital_signature", "key_agreement"]
    assert summary.extended_key_usage == ["serverAuth", "clientAuth"]
    assert summary.serial == f"{cert.serial_number:x}"
    assert summary.not_after == cert.not_valid_after_utc
    assert summary.to_json()["not_after"] == cert.not_valid_after_utc.isoformat()
    root = describe(pki / "ca-cert.pem")
    assert (root.is_ca, root.kind, root.key_usage) == (True, None, ["key_cert_sign", "crl_sign"])


# --- TLS -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Cluster:
    host1: IssuedCert  # the agent's server certificate; 127.0.0.1 is one of its SANs
    host2: IssuedCert
    controller: IssuedCert
    foreign: IssuedCert  # "controller" again, from another CA: same DN, wrong issuer


@pytest.fixture
def cluster(pki: Path, tmp_path: Path) -> Cluster:
    ca.init_ca(tmp_path / "other")
    return Cluster(
        host1=ca.issue(pki, "host1", ips=["127.0.0.1"]),
        host2=ca.issue(pki, "host2", ips=["127.0.0.2"]),
        controller=ca.issue(pki, "controller", kind="controller"),
        foreign=ca.issue(tmp_path / "other", "controller", kind="controller"),
    )


def _client(
    issued: IssuedCert, *, trust: Path | None = None, tls12: bool = False
) -> ssl.SSLContext:
    ctx = ssl_context_client(cert=issued.cert, key=issued.key, ca=trust or issued.ca)
    if tls12:
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    return ctx


def _no_cert_client(trust: Path, *, tls12: bool = False) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(trust))
    if tls12:
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    return ctx


class Server:
    """An asyncio TLS server on 127.0.0.1 that greets each admitted client by its DN."""

    def __init__(self) -> None:
        self.admitted: list[str] = []
        self.server: asyncio.Server | None = None

    async def start(self, ctx: ssl.SSLContext) -> int:
        self.server = await asyncio.start_server(self._greet, "127.0.0.1", 0, ssl=ctx)
        return int(self.server.sockets[0].getsockname()[1])

    async def _greet(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peercert")
        dn = ",".join(f"{k}={v}" for rdn in peer["subject"] for k, v in rdn)
        self.admitted.append(dn)
        writer.write(f"hello {dn}\n".encode())
        await writer.drain()
        writer.close()

    async def stop(self) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    running = Server()
    yield running
    await running.stop()


async def _talk(port: int, ctx: ssl.SSLContext, hostname: str = "host1") -> str | None:
    """The server's greeting, or None if the server refused us (it closes the connection in
    the handshake: EOF after a TLS 1.3 client's side completed, a reset under TLS 1.2)."""
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection("127.0.0.1", port, ssl=ctx, server_hostname=hostname), 10
        )
    except (ConnectionResetError, ssl.SSLError):
        return None
    try:
        line = await asyncio.wait_for(reader.readline(), 10)
    except (ConnectionResetError, ssl.SSLError):
        return None
    finally:
        writer.close()
        with contextlib.suppress(OSError, ssl.SSLError):
            await writer.wait_closed()
    return line.decode() or None


@pytest.mark.parametrize("tls12", [False, True], ids=["tls1.3", "tls1.2"])
async def test_pinned_server_admits_only_the_controller(
    cluster: Cluster, server: Server, tls12: bool
) -> None:
    host1 = cluster.host1
    port = await server.start(
        ssl_context_server_pinned(cert=host1.cert, key=host1.key, peer=cluster.controller.cert)
    )
    controller = "organizationName=Ferry,organizationalUnitName=controller,commonName=controller"
    assert await _talk(port, _client(cluster.controller, tls12=tls12)) == f"hello {controller}\n"
    assert server.admitted == [controller]
    refused = [
        _client(cluster.host2, tls12=tls12),  # same CA, but not the pinned certificate
        _client(cluster.foreign, trust=host1.ca, tls12=tls12),  # same DN, another CA
        _no_cert_client(host1.ca, tls12=tls12),
    ]
    for ctx in refused:
        assert await _talk(port, ctx) is None
    assert len(server.admitted) == 1


async def test_pinned_server_refuses_a_reissued_controller_certificate(
    pki: Path, cluster: Cluster, server: Server
) -> None:
    """The pin is the certificate, not the name: a new controller certificate (same DN, same CA)
    is refused until the agent is given it."""
    host1 = cluster.host1
    pinned = ssl_context_server_pinned(cert=host1.cert, key=host1.key, peer=cluster.controller.cert)
    old_cert = cluster.controller.cert.read_bytes()
    port = await server.start(pinned)
    reissued = ca.issue(pki, "controller", kind="controller", force=True)
    assert reissued.cert.read_bytes() != old_cert
    assert await _talk(port, _client(reissued)) is None
    assert server.admitted == []


async def test_pinned_server_reports_why_it_refused(cluster: Cluster) -> None:
    """The server's own verdict, seen by upgrading a plain connection with start_tls."""
    host1 = cluster.host1
    pinned = ssl_context_server_pinned(cert=host1.cert, key=host1.key, peer=cluster.controller.cert)
    verdicts: list[str] = []

    async def upgrade(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await writer.start_tls(pinned)
            verdicts.append("admitted")
        except ssl.SSLCertVerificationError as exc:
            verdicts.append(exc.verify_message)
        except ssl.SSLError as exc:
            verdicts.append(exc.reason or "")
        writer.close()

    plain = await asyncio.start_server(upgrade, "127.0.0.1", 0)
    port = int(plain.sockets[0].getsockname()[1])
    try:
        for ctx in (
            _client(cluster.controller),
            _client(cluster.host2),
            _client(cluster.foreign, trust=host1.ca),
            _no_cert_client(host1.ca),
        ):
            await _talk(port, ctx)
    finally:
        plain.close()
        await plain.wait_closed()
    assert verdicts == [
        "admitted",
        # host2 sends its chain up to the CA, which the pinned server does not trust
        "self-signed certificate in certificate chain",
        "unable to get local issuer certificate",
        "PEER_DID_NOT_RETURN_A_CERTIFICATE",
    ]


async def test_ca_wide_server_admits_every_cluster_member_and_nobody_else(
    cluster: Cluster, server: Server
) -> None:
    host1 = cluster.host1
    port = await server.start(ssl_context_server(cert=host1.cert, key=host1.key, ca=host1.ca))
    assert await _talk(port, _client(cluster.host2)) is not None
    assert await _talk(port, _client(cluster.controller)) is not None
    assert await _talk(port, _client(cluster.foreign, trust=host1.ca)) is None
    assert await _talk(port, _no_cert_client(host1.ca)) is None
    assert [dn.rsplit("=", 1)[1] for dn in server.admitted] == ["host2", "controller"]


async def test_client_checks_the_servers_ca_and_name(
    cluster: Cluster, server: Server, tmp_path: Path
) -> None:
    host1 = cluster.host1
    port = await server.start(ssl_context_server(cert=host1.cert, key=host1.key, ca=host1.ca))
    controller = _client(cluster.controller)
    assert await _talk(port, controller, hostname="host1") is not None
    assert await _talk(port, controller, hostname="127.0.0.1") is not None  # the IP SAN
    with pytest.raises(ssl.SSLCertVerificationError, match="Hostname mismatch"):
        await asyncio.open_connection("127.0.0.1", port, ssl=controller, server_hostname="host2")
    foreign_view = _client(cluster.foreign)  # trusts only the other CA
    with pytest.raises(ssl.SSLCertVerificationError, match="certificate verify failed"):
        await asyncio.open_connection("127.0.0.1", port, ssl=foreign_view, server_hostname="host1")
    assert len(server.admitted) == 2


def test_contexts_require_tls12_and_never_trust_system_cas(cluster: Cluster) -> None:
    c = cluster.controller
    contexts = [
        ssl_context_server(cert=c.cert, key=c.key, ca=c.ca),
        ssl_context_server_pinned(cert=c.cert, key=c.key, peer=cluster.host1.cert),
        ssl_context_client(cert=c.cert, key=c.key, ca=c.ca),
    ]
    for ctx in contexts:
        assert ctx.minimum_version == ssl.TLSVersion.TLSv1_2
        assert ctx.verify_mode == ssl.CERT_REQUIRED
        assert ctx.cert_store_stats()["x509"] == 1  # the one trusted certificate given
    assert contexts[1].verify_flags & ssl.VERIFY_X509_PARTIAL_CHAIN
    assert not contexts[0].verify_flags & ssl.VERIFY_X509_PARTIAL_CHAIN
    assert contexts[2].check_hostname


def test_contexts_refuse_a_ca_pin_and_missing_files(cluster: Cluster, tmp_path: Path) -> None:
    c = cluster.controller
    with pytest.raises(PkiError, match="is a CA certificate; pin the peer's own certificate"):
        ssl_context_server_pinned(cert=c.cert, key=c.key, peer=c.ca)
    with pytest.raises(PkiError, match=r"cannot load certificate .* with key .*missing"):
        ssl_context_client(cert=c.cert, key=tmp_path / "missing.pem", ca=c.ca)
    with pytest.raises(PkiError, match="cannot load certificate"):
        ssl_context_server(cert=c.cert, key=cluster.host1.key, ca=c.ca)  # not its key
    with pytest.raises(PkiError, match="cannot load trusted certificate"):
        ssl_context_server(cert=c.cert, key=c.key, ca=tmp_path / "missing.pem")
