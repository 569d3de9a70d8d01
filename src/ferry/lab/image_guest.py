"""Talking to a guest booted from Ferry's image: its kernel command line and its READY line.

The image's /init prints ``FERRY-GUEST-READY name=<name> ip=<addr>`` on ttyS0 once eth0 is
configured and httpd listens; with ``-serial file:<log>`` callers wait for that line in the log.
"""

from __future__ import annotations

import asyncio
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

from ferry.agent.drivers.guest_cmdline import BASE_ARGS, kernel_args
from ferry.lab.image_init import READY_MARKER

__all__ = [
    "BASE_ARGS",
    "GuestBootError",
    "GuestReady",
    "kernel_args",
    "parse_ready",
    "wait_for_ready",
]

_READY_RE = re.compile(rf"^{READY_MARKER} name=(?P<name>\S+) ip=(?P<ip>\S*)\s*$", re.MULTILINE)


class GuestBootError(Exception):
    """QEMU exited before the guest said READY."""


@dataclass(frozen=True)
class GuestReady:
    """What the guest announced, and how long after the wait started it did."""

    name: str
    ip: str
    seconds: float


def parse_ready(log_text: str) -> tuple[str, str] | None:
    """(name, ip) from the first READY line in a serial log, or None."""
    match = _READY_RE.search(log_text.replace("\r", ""))
    return (match["name"], match["ip"]) if match else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except FileNotFoundError:
        return ""


def serial_tail(serial_log: Path, lines: int = 5) -> str:
    """The last lines of a serial log on one line, for error messages."""
    text = _read(serial_log).strip()
    return " | ".join(text.splitlines()[-lines:]) or "(serial log empty or missing)"


async def wait_for_ready(serial_log: Path, pid: int | None = None, poll: float = 0.1) -> GuestReady:
    """Wait until the serial log shows the READY line; raise GuestBootError if QEMU `pid`
    exits first. Bound it with ``asyncio.timeout`` (under TCG a guest is READY in ~3-5 s)."""
    started = time.monotonic()
    while True:
        found = parse_ready(await asyncio.to_thread(_read, serial_log))
        if found:
            return GuestReady(name=found[0], ip=found[1], seconds=time.monotonic() - started)
        if pid is not None and not _alive(pid):
            tail = await asyncio.to_thread(serial_tail, serial_log)
            raise GuestBootError(f"QEMU (pid {pid}) exited before {READY_MARKER}: {tail}")
        await asyncio.sleep(poll)
