"""`ferry pki ...` on real files (no controller needed).

Most tests run the CLI's real entry point, ferry.cli.main:main, in-process (a subprocess costs
half a second each); one runs the installed console script to show both behave the same.
"""

from __future__ import annotations

import ipaddress
import json
import stat
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509

from ferry.cli.main import main
from tests.cli.live import Cli


@dataclass(frozen=True)
class Result:
    returncode: int
    stdout: str
    stderr: str


@dataclass
class InProcess:
    """`ferry ARGS` through ferry.cli.main:main, with Cli's interface."""

    capsys: pytest.CaptureFixture[str]
    monkeypatch: pytest.MonkeyPatch

    def __call__(self, *args: str, ok: bool = True) -> Result:
        self.monkeypatch.setattr(sys, "argv", ["ferry", *args])
        self.capsys.readouterr()
        with pytest.raises(SystemExit) as exited:
            main()
        out, err = self.capsys.readouterr()
        code = exited.value.code
        result = Result(code if isinstance(code, int) else 1, out, err)
        if ok and result.returncode != 0:
            raise AssertionError(f"ferry {' '.join(args)} failed: {err}")
        return result

    def fails(self, *args: str, code: int = 1) -> str:
        """Run a command that must fail; return its single error line."""
        result = self(*args, ok=False)
        assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        if code == 1:
            assert len(lines) == 1, result.stderr
        return result.stderr.strip()


@pytest.fixture
def ferry(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> InProcess:
    monkeypatch.setenv("COLUMNS", "200")  # usage errors are wrapped to the terminal's width
    return InProcess(capsys, monkeypatch)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _lines(text: str) -> dict[str, str]:
    """`show` output as {label: value}."""
    return {line[:12].strip(): line[13:] for line in text.splitlines()}


def test_init_writes_the_ca_and_refuses_to_overwrite_it(ferry: InProcess, tmp_path: Path) -> None:
    pki = tmp_path / "pki"
    out = ferry("pki", "init", "--dir", str(pki)).stdout
    assert out.splitlines() == [str(pki / "ca-cert.pem"), str(pki / "ca-key.pem")]
    assert _mode(pki / "ca-key.pem") == 0o600
    key = (pki / "ca-key.pem").read_bytes()
    error = ferry.fails("pki", "init", "--dir", str(pki))
    assert error == (
        f"error: a CA already exists in {pki} (ca-cert.pem); pass --force to replace it,"
        " which invalidates every certificate it issued"
    )
    assert (pki / "ca-key.pem").read_bytes() == key
    ferry("pki", "init", "--dir", str(pki), "--force", "--cn", "Lab CA", "--days", "30")
    assert (pki / "ca-key.pem").read_bytes() != key
    cert = x509.load_pem_x509_certificate((pki / "ca-cert.pem").read_bytes())
    assert cert.subject.rfc4514_string() == "CN=Lab CA,O=Ferry"


def test_issue_prints_the_files_and_writes_the_sans(
    ferry: InProcess, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pki = tmp_path / "pki"
    ferry("pki", "init", "--dir", str(pki))
    out = ferry(
        "pki", "issue", "host1", "--dir", str(pki),
        "--dns", "host1.lab", "--ip", "198.18.0.1", "--ip", "fd00::1",
    ).stdout  # fmt: skip
    issued = pki / "issued" / "host1"
    assert out.splitlines() == [str(issued / n) for n in ("cert.pem", "key.pem", "ca.pem")]
    assert _mode(issued / "key.pem") == 0o600
    cert = x509.load_pem_x509_certificate((issued / "cert.pem").read_bytes())
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == ["host1", "host1.lab"]
    assert sans.get_values_for_type(x509.IPAddress) == [
        ipaddress.ip_address("198.18.0.1"),
        ipaddress.ip_address("fd00::1"),
    ]
    assert "host1 already has a certificate" in ferry.fails(
        "pki", "issue", "host1", "--dir", str(pki)
    )
    ferry("pki", "issue", "host1", "--dir", str(pki), "--force")
    monkeypatch.setenv("FERRY_PKI_DIR", str(pki))
    controller = ferry("pki", "issue", "ctl", "--kind", "controller")
    assert controller.stdout.splitlines()[0] == str(pki / "issued" / "ctl" / "cert.pem")


def test_issue_errors_are_one_line(ferry: InProcess, tmp_path: Path) -> None:
    pki = tmp_path / "pki"
    assert ferry.fails("pki", "issue", "host1", "--dir", str(pki)) == (
        f"error: no CA in {pki}; create one with: ferry pki init --dir {pki}"
    )
    ferry("pki", "init", "--dir", str(pki))
    assert ferry.fails("pki", "issue", "host1", "--dir", str(pki), "--ip", "1.2.3") == (
        "error: invalid IP address '1.2.3': use an IPv4 or IPv6 address"
    )
    assert "invalid host name 'Host_1'" in ferry.fails("pki", "issue", "Host_1", "--dir", str(pki))
    assert "invalid DNS name 'a..b'" in ferry.fails(
        "pki", "issue", "host1", "--dir", str(pki), "--dns", "a..b"
    )
    usage = ferry.fails("pki", "issue", "host1", "--dir", str(pki), "--kind", "admin", code=2)
    assert "Invalid value for '--kind'" in usage
    assert "'admin' is not one of" in usage
    assert not (pki / "issued").exists()


def test_show_describes_and_verifies_a_certificate(ferry: InProcess, tmp_path: Path) -> None:
    pki = tmp_path / "pki"
    ferry("pki", "init", "--dir", str(pki))
    ferry("pki", "issue", "host1", "--dir", str(pki), "--dns", "host1.lab", "--ip", "198.18.0.1")
    cert = pki / "issued" / "host1" / "cert.pem"
    shown = _lines(ferry("pki", "show", str(cert), "--dir", str(pki)).stdout)
    assert shown["subject"] == "O=Ferry,OU=host,CN=host1  (as QEMU tls-authz matches it)"
    assert shown["issuer"] == "O=Ferry,CN=Ferry cluster CA"
    assert (shown["kind"], shown["CA"]) == ("host", "no")
    assert (shown["DNS"], shown["IP"]) == ("host1, host1.lab", "198.18.0.1")
    assert shown["key usage"] == "digital_signature, key_agreement"
    assert shown["ext. usage"] == "serverAuth, clientAuth"
    assert shown["valid"].endswith("UTC (expires in 824 days)")
    assert shown["verified"] == f"yes, by the CA in {pki}"
    unchecked = _lines(ferry("pki", "show", str(pki / "ca-cert.pem")).stdout)
    assert (unchecked["CA"], unchecked["verified"]) == ("yes", "not checked (no --dir)")
    data = json.loads(ferry("pki", "show", str(cert), "--dir", str(pki), "-f", "json").stdout)
    assert data["subject"] == "O=Ferry,OU=host,CN=host1"
    assert (data["dns"], data["ips"]) == (["host1", "host1.lab"], ["198.18.0.1"])
    assert (data["verified"], data["verify_error"]) == (True, None)


def test_show_fails_for_a_certificate_of_another_ca(ferry: InProcess, tmp_path: Path) -> None:
    pki, other = tmp_path / "pki", tmp_path / "other"
    for directory in (pki, other):
        ferry("pki", "init", "--dir", str(directory))
    ferry("pki", "issue", "host1", "--dir", str(other))
    foreign = other / "issued" / "host1" / "cert.pem"
    result = ferry("pki", "show", str(foreign), "--dir", str(pki), ok=False)
    assert result.returncode == 1
    assert _lines(result.stdout)["verified"] == "no"  # the details are still shown
    assert result.stderr.strip() == (
        f"error: {foreign} is not signed by the CA in {pki} (its issuer is O=Ferry,CN=Ferry"
        " cluster CA)"
    )


def test_show_errors_are_one_line(ferry: InProcess, tmp_path: Path) -> None:
    missing = tmp_path / "missing.pem"
    assert ferry.fails("pki", "show", str(missing)) == (
        f"error: cannot read certificate {missing}: No such file or directory"
    )
    junk = tmp_path / "junk.pem"
    junk.write_text("hello\n")
    assert ferry.fails("pki", "show", str(junk)) == f"error: {junk} is not a PEM certificate"


def test_the_installed_console_script(tmp_path: Path) -> None:
    script = Cli("http://127.0.0.1:9", None)  # pki commands never talk to a controller
    pki = tmp_path / "pki"
    assert script("pki", "init", "--dir", str(pki)).stdout.splitlines()[0] == str(
        pki / "ca-cert.pem"
    )
    assert script.fails("pki", "issue", "h1", "--dir", str(pki), "--ip", "300.1.1.1") == (
        "error: invalid IP address '300.1.1.1': use an IPv4 or IPv6 address"
    )
    script("pki", "issue", "h1", "--dir", str(pki), "--ip", "198.18.0.1")
    shown = script("pki", "show", str(pki / "issued" / "h1" / "cert.pem"), "--dir", str(pki))
    assert _lines(shown.stdout)["verified"] == f"yes, by the CA in {pki}"
