"""`ferry lab`: a whole cluster on one machine.

Real mode (`--driver qemu`, root): hosts are network namespaces (lab/net.py), each runs an agent
(`ip netns exec`) whose QEMU guests boot the image the project builds (lab/image.py); the
controller runs in the root namespace on the management fabric. Fake mode: the same controller
and agents on 127.0.0.1 with simulated guests, no root and no namespaces.

Everything the lab starts is recorded in `<dir>/lab.json`; `down` stops those processes by PID,
then removes every namespace and link named after the lab's prefix, so even a lab whose record
was lost is removed completely.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ferry.lab.net_plan import INST_ROOT_IP, LabNetPlan
from ferry.pki.ca import init_ca, issue

FERRY = str(Path(sys.executable).parent / "ferry")
CONTROLLER_PORT = 8470
AGENT_PORT = 8471


@dataclass
class HostRecord:
    name: str
    namespace: str | None
    mgmt_ip: str
    agent_port: int
    pid: int | None = None


@dataclass
class LabRecord:
    prefix: str
    driver: str
    dir: str
    controller_url: str
    controller_pid: int | None = None
    hosts: list[HostRecord] = field(default_factory=list)

    @property
    def path(self) -> Path:
        return Path(self.dir) / "lab.json"

    def save(self) -> None:
        self.path.write_text(json.dumps(asdict(self), indent=2))

    @classmethod
    def load(cls, lab_dir: Path) -> LabRecord | None:
        path = lab_dir.absolute() / "lab.json"
        if not path.exists():
            return None
        raw = json.loads(path.read_text())
        hosts = [HostRecord(**h) for h in raw.pop("hosts")]
        return cls(**raw, hosts=hosts)

    def env(self) -> dict[str, str]:
        lab = Path(self.dir)
        return {
            "FERRY_URL": self.controller_url,
            "FERRY_TOKEN_FILE": str(lab / "state" / "admin.token"),
            "FERRY_CA": str(lab / "pki" / "ca-cert.pem"),
        }


def plan_hosts(
    prefix: str, count: int, driver: str, link_mbit: int | None
) -> tuple[LabNetPlan | None, list[HostRecord]]:
    if driver == "fake":
        return None, [
            HostRecord(f"host{i}", None, "127.0.0.1", AGENT_PORT + i) for i in range(1, count + 1)
        ]
    plan = LabNetPlan(prefix=prefix, hosts=count, link_mbit=link_mbit)
    return plan, [
        HostRecord(f"host{i}", plan.host_ns(i), str(plan.mgmt_ip(i)), AGENT_PORT)
        for i in plan.host_indices
    ]


def issue_certificates(lab_dir: Path, controller_ip: str, hosts: list[HostRecord]) -> None:
    pki = lab_dir / "pki"
    if not (pki / "ca-cert.pem").exists():
        init_ca(pki)
    issue(pki, "controller", ips=[controller_ip, "127.0.0.1"], kind="controller", force=True)
    for host in hosts:
        issue(pki, host.name, ips=[host.mgmt_ip], force=True)


@dataclass(frozen=True)
class QemuSetup:
    """What each real host's agent needs for QEMU: the kernel and initramfs of diskless guests
    and the accelerator the lab probed."""

    kernel: Path
    initrd: Path
    accel: str = "tcg"
    bridge: str = "br-inst"


# The lab's shared storage: one directory that every host namespace sees, at the same path
# (hosts are network namespaces of one machine), which is what an NFS or CephFS mount shared by
# real hosts looks like to QEMU. Local storage: a directory of each host's own.
SHARED_POOL = "lab"


def storage_lines(lab_dir: Path, host: HostRecord, storage: str) -> list[str]:
    own = lab_dir / "hosts" / host.name
    lines = ["[storage]", f'kind = "{storage}"', f'image_cache = "{own / "images"}"']
    if storage == "shared":
        return [*lines, f'path = "{lab_dir / "shared-disks"}"', f'pool = "{SHARED_POOL}"']
    return [*lines, f'path = "{own / "disks"}"']


def dhcp_lines(dhcp_address: str | None) -> list[str]:
    if dhcp_address is None:
        return []
    return ["[[dhcp]]", 'network = "lab"', f'address = "{dhcp_address}"', "lease_s = 600"]


def agent_config(
    lab_dir: Path,
    host: HostRecord,
    controller_url: str,
    driver: str,
    qemu: QemuSetup | None,
    storage: str = "shared",
    dhcp_address: str | None = None,
) -> Path:
    pki = lab_dir / "pki"
    issued = pki / "issued" / host.name
    lines = [
        f'name = "{host.name}"',
        f'listen = "{host.mgmt_ip}:{host.agent_port}"',
        f'management_address = "{host.mgmt_ip}"',
        f'migration_address = "{host.mgmt_ip}"',
        f'controller_url = "{controller_url}"',
        f'token_file = "{lab_dir / "hosts" / host.name / "agent.token"}"',
        f'driver = "{driver}"',
        f'run_dir = "{lab_dir / "hosts" / host.name / "run"}"',
        'networks = ["lab"]',
        "[inventory]",
        "vcpus = 2",
        "ram_mb = 2048",
        "disk_gb = 20",
        "[tls]",
        f'ca = "{pki / "ca-cert.pem"}"',
        f'cert = "{issued / "cert.pem"}"',
        f'key = "{issued / "key.pem"}"',
        f'controller_cert = "{pki / "issued" / "controller" / "cert.pem"}"',
    ]
    lines += storage_lines(lab_dir, host, storage)
    if qemu is not None:
        lines += [
            "[qemu]",
            f'kernel = "{qemu.kernel}"',
            f'initrd = "{qemu.initrd}"',
            f'bridge = "{qemu.bridge}"',
            f'accel = "{qemu.accel}"',
        ]
    lines += dhcp_lines(dhcp_address)
    path = lab_dir / "hosts" / host.name / "agent.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path


async def start_detached(argv: list[str], log: Path, env: dict[str, str] | None = None) -> int:
    """Start a process that outlives this command (own session); return its PID."""
    with log.open("ab") as out:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdout=out,
            stderr=out,
            stdin=asyncio.subprocess.DEVNULL,
            env={**os.environ, **(env or {})},
            start_new_session=True,
        )
    return proc.pid


def is_ours(pid: int) -> bool:
    try:
        return b"ferry" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


async def stop_pid(pid: int | None, grace: float = 10.0) -> None:
    """SIGTERM a process this lab started (checked by its command line), SIGKILL if it lingers."""
    if pid is None or not is_ours(pid):
        return
    os.kill(pid, signal.SIGTERM)
    for _ in range(int(grace * 10)):
        await asyncio.sleep(0.1)
        if not is_ours(pid):
            return
    os.kill(pid, signal.SIGKILL)


def lab_processes(lab_dir: Path) -> list[int]:
    """PIDs of ferry processes whose command line names this lab's directory: what a lab
    started, found even when its record is lost (a crash during `up`)."""
    marker = str(lab_dir.absolute()).encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if b"ferry" in cmdline and marker + b"/" in cmdline and b"qemu-system" not in cmdline:
            found.append(int(entry.name))
    return found


def instance_gateway() -> str:
    return str(INST_ROOT_IP)
