"""Does KVM work on this host? A real QEMU runs a tiny firmware under `-accel kvm`, bounded in time.

`/dev/kvm` existing, and even its ioctls answering, says little: on nested hosts QEMU opens it,
creates the VM and its vCPUs, runs real-mode code, and then hangs the moment the guest enters
protected mode (every kernel does, in its first second). So the probe runs that step: a 64 KiB
firmware image that leaves real mode, loads a flat 32-bit data segment, and writes a byte to
QEMU's `isa-debug-exit` port, which ends QEMU with the status (byte << 1) | 1. KVM is usable when
QEMU ends with that status within the timeout; a QEMU still running then is killed and KVM is
not used (the agent falls back to TCG and says why).

The firmware, assembled from (GNU as, `--32`):

    .code16                                  # at 0xF0000, where the reset vector jumps
    start:  cli
            lgdtl %cs:gdtr
            movl %cr0, %eax ; orl $1, %eax ; movl %eax, %cr0
            ljmpl $0x08, $(0xF0000 + pm)
    .code32
    pm:     movw $0x10, %ax ; movw %ax, %ds
            movb $0x31, %al ; outb %al, $0xf4    # debug-exit: QEMU exits with status 99
    1:      hlt ; jmp 1b
    .align 8
    gdt:    .quad 0, 0x00CF9A000000FFFF, 0x00CF92000000FFFF   # null, flat code, flat data
    gdtr:   .word 23 ; .long 0xF0000 + gdt
    .code16
    .org 0xFFF0                              # the reset vector: CS 0xF000 base 0xFFFF0000
            ljmp $0xF000, $start
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

_CODE = bytes.fromhex(
    "fa2e660f011640000f20c06683c8010f22c066ea1a000f00080066b810008ed8b031e6f4f4ebfd90"
    "0000000000000000ffff0000009acf00ffff00000092cf00170028000f00"
)
_RESET = bytes.fromhex("ea000000f0")  # ljmp $0xF000, $0x0000
PORT = 0xF4
EXIT_STATUS = (0x31 << 1) | 1
DEFAULT_TIMEOUT_S = 5.0


def firmware() -> bytes:
    """The probe's 64 KiB firmware image (hlt everywhere but the code and the reset vector)."""
    image = bytearray(b"\xf4" * 0x10000)
    image[: len(_CODE)] = _CODE
    image[0xFFF0 : 0xFFF0 + len(_RESET)] = _RESET
    return bytes(image)


@dataclass(frozen=True)
class KvmProbe:
    usable: bool
    reason: str  # why not, or what was checked


def probe_argv(binary: str, bios: Path, accel: str = "kvm") -> list[str]:
    return [
        binary,
        "-accel",
        accel,
        "-machine",
        "q35",
        "-m",
        "16",
        "-nodefaults",
        "-no-user-config",
        "-display",
        "none",
        "-no-reboot",
        "-bios",
        str(bios),
        "-device",
        f"isa-debug-exit,iobase={PORT:#x},iosize=4",
    ]


async def probe(
    binary: str = "qemu-system-x86_64",
    *,
    device: Path = Path("/dev/kvm"),
    timeout_s: float = DEFAULT_TIMEOUT_S,
    accel: str = "kvm",
) -> KvmProbe:
    """Run the firmware under `accel` (kvm; tcg in tests, to check the probe itself)."""
    if accel == "kvm" and not os.access(device, os.R_OK | os.W_OK):
        return KvmProbe(False, f"{device} is missing or not accessible")
    with tempfile.TemporaryDirectory(prefix="ferry-kvm-probe-") as tmp:
        bios = Path(tmp) / "probe.rom"
        bios.write_bytes(firmware())
        try:
            proc = await asyncio.create_subprocess_exec(
                *probe_argv(binary, bios, accel),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE,
            )
        except OSError as exc:
            return KvmProbe(False, f"cannot run {binary}: {exc.strerror}")
        try:
            _, err = await asyncio.wait_for(proc.communicate(), timeout_s)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
            return KvmProbe(
                False, f"a {accel} guest hung entering protected mode ({timeout_s:g} s)"
            )
    if proc.returncode == EXIT_STATUS:
        return KvmProbe(True, f"a {accel} guest ran to protected mode")
    last = err.decode(errors="replace").strip().splitlines()[-1:] or ["no message"]
    return KvmProbe(False, f"{binary} -accel {accel} exited {proc.returncode}: {last[0]}")


class KvmUnusable(RuntimeError):
    """KVM is configured (`accel = "kvm"`) but the probe could not run a guest on it."""


def decide(setting: str, result: KvmProbe | None) -> str:
    """The accelerator for `setting` given the probe's `result` (None: not probed): tcg as
    configured; for `auto` kvm when the probe ran its guest, else tcg; configured kvm that fails
    the probe stops the agent rather than run guests some other way than the operator said."""
    if setting == "tcg":
        return "tcg"
    if result is not None and result.usable:
        return "kvm"
    if setting == "kvm":
        why = result.reason if result else "not probed"
        raise KvmUnusable(f"accel = 'kvm' is configured but KVM does not work: {why}")
    return "tcg"
