"""The KVM probe: a real QEMU runs its firmware to protected mode (checked under TCG, which every
machine has), a QEMU that hangs is killed at the timeout and KVM is not chosen, and the agent's
choice follows the setting."""

from __future__ import annotations

import os
import shutil
import stat
import time
from pathlib import Path

import pytest

from ferry.agent.config import QemuSettings
from ferry.agent.drivers.kvm_probe import KvmProbe, KvmUnusable, decide, firmware, probe

QEMU = "qemu-system-x86_64"


def needs_qemu() -> None:
    if shutil.which(QEMU) is None:
        if os.environ.get("CI"):
            pytest.fail(f"{QEMU} is missing (scripts/setup.sh installs qemu-system-x86)")
        pytest.skip(f"{QEMU} is not installed")


def script(tmp_path: Path, body: str) -> str:
    path = tmp_path / "fake-qemu"
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(path)


def test_firmware_holds_the_code_and_the_reset_vector() -> None:
    image = firmware()
    assert len(image) == 0x10000
    assert image[0xFFF0:0xFFF5] == bytes.fromhex("ea000000f0")  # ljmp $0xF000, $0
    assert image[0] == 0xFA  # cli, at 0xF0000 where the reset vector jumps


async def test_the_firmware_reaches_protected_mode_in_a_real_qemu() -> None:
    """Under TCG the same firmware must end QEMU with the debug-exit status: the probe's own
    check, so a broken firmware can never be read as 'KVM hangs'."""
    needs_qemu()
    result = await probe(QEMU, accel="tcg", timeout_s=20)
    assert result == KvmProbe(True, "a tcg guest ran to protected mode")


async def test_a_hanging_qemu_is_killed_and_kvm_is_not_chosen(tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    binary = script(tmp_path, f"echo $$ > {pidfile}\nexec sleep 30")
    started = time.monotonic()
    result = await probe(binary, device=Path("/dev/null"), timeout_s=0.5)
    assert time.monotonic() - started < 5
    assert not result.usable and "hung entering protected mode (0.5 s)" in result.reason
    pid = int(pidfile.read_text())
    assert not os.path.exists(f"/proc/{pid}")  # noqa: PTH110 ASYNC240 - killed and reaped
    assert decide("auto", result) == "tcg"


async def test_a_qemu_that_fails_is_reported_with_its_message(tmp_path: Path) -> None:
    message = "Could not access KVM kernel module: No such device"
    binary = script(tmp_path, f'echo "{message}" >&2\nexit 1')
    result = await probe(binary, device=Path("/dev/null"))
    assert not result.usable and result.reason.endswith(f"exited 1: {message}")


async def test_a_missing_device_or_binary_is_not_kvm(tmp_path: Path) -> None:
    missing = await probe(QEMU, device=tmp_path / "kvm")
    assert missing == KvmProbe(False, f"{tmp_path / 'kvm'} is missing or not accessible")
    absent = await probe(str(tmp_path / "no-qemu"), device=Path("/dev/null"))
    assert not absent.usable and absent.reason.startswith("cannot run")


def test_the_setting_decides_with_the_probe() -> None:
    works, hangs = KvmProbe(True, "ran"), KvmProbe(False, "hung")
    assert [decide("auto", works), decide("auto", hangs), decide("auto", None)] == [
        "kvm",
        "tcg",
        "tcg",
    ]
    assert decide("tcg", works) == "tcg"  # an operator's tcg stays tcg
    assert decide("kvm", works) == "kvm"
    with pytest.raises(KvmUnusable, match="configured but KVM does not work: hung"):
        decide("kvm", hangs)


def test_cpu_models_that_cannot_migrate_are_refused() -> None:
    base = {"kernel": "/k", "initrd": "/i"}
    assert QemuSettings.model_validate(base).cpu_model == "qemu64"
    assert QemuSettings.model_validate({**base, "cpu_model": "EPYC-Rome"}).cpu_model == "EPYC-Rome"
    for model in ("host", "max"):
        with pytest.raises(ValueError, match="cannot live-migrate"):
            QemuSettings.model_validate({**base, "cpu_model": model})
    with pytest.raises(ValueError, match="accel"):
        QemuSettings.model_validate({**base, "accel": "hvf"})
