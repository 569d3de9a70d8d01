"""What the lab test modules share: the `ferry` CLI against a lab, the lab's life, guests' pages,
namespaces and QEMU processes, and a 20 ms pinger that measures a blackout."""

from __future__ import annotations

import json
import os
import re
import signal
import ssl
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from ferry.bench.probe import PROBE_INTERVAL, Blackout, blackout_of
from tests.cli.live import FERRY

RANGE_WAIT = 900.0  # seconds to wait for another lab to release 198.18.0.0/15
TEST_PREFIXES = frozenset(
    {"flt", "flm", "flw", "fld", "flf", "fli", "flx"}
)  # the lab test modules' labs
LEFT_BEHIND = re.compile(r"lab '([a-z0-9]+)' was left behind")


def lab_env(lab: Path) -> dict[str, str]:
    """FERRY_URL, FERRY_TOKEN_FILE and FERRY_CA of the lab in `lab`, once it is up."""
    if not (lab / "lab.json").exists():
        return {}
    out = subprocess.run(
        [FERRY, "lab", "env", "--dir", str(lab)], capture_output=True, text=True, check=True
    ).stdout
    return dict(line.removeprefix("export ").split("=", 1) for line in out.splitlines())


def ferry(*args: str, lab: Path, check: bool = True) -> subprocess.CompletedProcess[str]:
    """The `ferry` console script, pointed at the lab; with `check`, a failure says what the
    command printed."""
    env = {**os.environ, "COLUMNS": "200", **lab_env(lab)}
    argv = [FERRY, *args]
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=600, check=False)
    if check and done.returncode != 0:
        raise AssertionError(
            f"ferry {' '.join(args)} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
        )
    return done


def ferry_json(*args: str, lab: Path) -> Any:
    return json.loads(ferry(*args, "-f", "json", lab=lab).stdout)


def namespaces(prefix: str) -> list[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    return [line.split()[0] for line in out.splitlines() if line.startswith(f"{prefix}-")]


def qemu_pids(pattern: str) -> list[int]:
    """QEMU processes whose command line contains `pattern` (a lab dir, an instance id)."""
    out = subprocess.run(
        ["pgrep", "-f", f"qemu-system.*{pattern}"], capture_output=True, text=True, check=False
    ).stdout
    return [int(pid) for pid in out.split()]


def namespace_of(pid: int) -> str:
    out = subprocess.run(
        ["ip", "netns", "identify", str(pid)], capture_output=True, text=True, check=True
    ).stdout
    return out.strip()


def taps(ns: str) -> str:
    """The tap devices in namespace `ns`, as `ip -o link` lines ("" when there is none)."""
    return subprocess.run(
        ["ip", "-n", ns, "-o", "link", "show", "type", "tun"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()


@contextmanager
def running_lab(
    lab_dir: Path, prefix: str, hosts: int, instances: int = 0, storage: str = "shared"
) -> Iterator[Path]:
    """`ferry lab up` (waiting while another lab owns the address range), then always
    `ferry lab down`, checking that no namespace and no QEMU of the lab is left."""
    try:
        _lab_up(lab_dir, prefix, hosts, instances, storage)
        yield lab_dir
    finally:
        ferry("lab", "down", "--dir", str(lab_dir), "--prefix", prefix, lab=lab_dir, check=False)
    assert namespaces(prefix) == []
    assert qemu_pids(str(lab_dir)) == []


def _lab_up(lab_dir: Path, prefix: str, hosts: int, instances: int, storage: str) -> None:
    deadline = time.monotonic() + RANGE_WAIT
    while True:
        up = ferry(
            "lab", "up", "--hosts", str(hosts), "--instances", str(instances),
            "--link-mbit", "1000", "--prefix", prefix, "--dir", str(lab_dir),
            "--storage", storage,
            lab=lab_dir, check=False,
        )  # fmt: skip
        if up.returncode == 0:
            return
        ferry("lab", "down", "--dir", str(lab_dir), "--prefix", prefix, lab=lab_dir, check=False)
        if "lab range" not in up.stdout + up.stderr or time.monotonic() > deadline:
            pytest.fail(f"lab up failed: {up.stdout}{up.stderr}")
        if not _remove_left_behind(up.stdout + up.stderr, lab_dir):
            time.sleep(15)


def _remove_left_behind(error: str, lab_dir: Path) -> bool:
    """A test lab that a killed run left behind (no process in its namespaces) is removed;
    any other holder of the range (a developer's lab, a running suite) is waited for."""
    found = LEFT_BEHIND.search(error)
    if found is None or found.group(1) not in TEST_PREFIXES:
        return False
    scratch = lab_dir / "left-behind"
    scratch.mkdir(exist_ok=True)
    ferry("lab", "down", "--dir", str(scratch), "--prefix", found.group(1), lab=scratch)
    return True


def ping(ip: str, count: int = 3) -> bool:
    argv = ["ping", "-c", str(count), "-W", "2", "-i", "0.3", ip]
    return subprocess.run(argv, capture_output=True, check=False).returncode == 0


def answers(ip: str, within: float = 60.0) -> bool:
    """The guest answers ping within `within` seconds (it boots after QEMU starts)."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if ping(ip, count=1):
            return True
        time.sleep(0.5)
    return False


def page(ip: str, path: str = "/") -> dict[str, str]:
    """A guest page as a dict: `/` has name, ip, uptime, requests, boot_id; `/dirty` the
    dirtier's state."""
    text = httpx.get(f"http://{ip}{path}", timeout=10).text
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)


class Pinger:
    """`ping -i 0.02` from the root namespace; counts the probes that got no answer."""

    def __init__(self, ip: str) -> None:
        self.proc = subprocess.Popen(
            ["ping", "-n", "-i", str(PROBE_INTERVAL), "-W", "1", ip],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )

    def stop(self) -> Blackout:
        """Probes still in flight when it stops are not counted."""
        self.proc.send_signal(signal.SIGINT)
        out, _ = self.proc.communicate(timeout=10)
        return blackout_of(out)


def metrics(lab: Path) -> dict[str, Any]:
    """GET /v1/metrics of the lab's controller, with the lab's token and CA."""
    env = lab_env(lab)
    token = Path(env["FERRY_TOKEN_FILE"]).read_text().strip()
    response = httpx.get(
        f"{env['FERRY_URL']}/v1/metrics",
        headers={"Authorization": f"Bearer {token}"},
        verify=ssl.create_default_context(cafile=env["FERRY_CA"]),
        timeout=30,
    )
    response.raise_for_status()
    found: dict[str, Any] = response.json()
    return found


T = TypeVar("T")


def wait_for(what: str, probe: Callable[[], T | None], within: float = 120.0) -> T:
    deadline = time.monotonic() + within
    while (value := probe()) is None:
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.25)
    return value


def migration(lab: Path, ident: str) -> dict[str, Any]:
    found: dict[str, Any] = ferry_json("migration", "show", ident, lab=lab)
    return found


def ended(lab: Path, ident: str, within: float = 240.0) -> dict[str, Any]:
    """Once the migration completed, failed or was cancelled; on a timeout the record and the
    tails of the lab's logs are printed before the failure."""

    def probe() -> dict[str, Any] | None:
        m = migration(lab, ident)
        return m if m["state"] in ("completed", "failed", "cancelled") else None

    try:
        return wait_for(f"migration {ident} to end", probe, within)
    except AssertionError:
        logs = {
            p.relative_to(lab): p.read_text(errors="replace")[-3000:]
            for p in [lab / "controller.log", *lab.glob("hosts/*/agent.log")]
            if p.exists()
        }
        print(f"\nstill going: {migration(lab, ident)}\n" + "\n".join(
            f"--- {name}\n{text}" for name, text in logs.items()))  # fmt: skip
        raise


def restart_controller(lab: Path) -> int:
    """SIGKILL the lab's controller and start it again with the same command line and
    environment; returns the new pid once it answers."""
    pid = int(_lab_record(lab)["controller_pid"])
    argv = Path(f"/proc/{pid}/cmdline").read_bytes().rstrip(b"\0").split(b"\0")
    env_raw = Path(f"/proc/{pid}/environ").read_bytes().rstrip(b"\0").split(b"\0")
    env = dict(item.decode().split("=", 1) for item in env_raw)
    os.kill(pid, signal.SIGKILL)
    with (lab / "controller.log").open("ab") as log:
        proc = subprocess.Popen(
            [a.decode() for a in argv],
            env=env,
            stdout=log,
            stderr=log,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    _save_controller_pid(lab, proc.pid)
    wait_for("the restarted controller to answer", lambda: _controller_answers(lab), 60)
    return proc.pid


def _lab_record(lab: Path) -> dict[str, Any]:
    record: dict[str, Any] = json.loads((lab / "lab.json").read_text())
    return record


def _save_controller_pid(lab: Path, pid: int) -> None:
    record = _lab_record(lab)
    record["controller_pid"] = pid
    (lab / "lab.json").write_text(json.dumps(record, indent=2))


def _controller_answers(lab: Path) -> bool | None:
    return True if ferry("host", "list", lab=lab, check=False).returncode == 0 else None
