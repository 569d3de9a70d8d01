"""A packet capture of a lab link (tcpdump into a pcap file, read back here): which TCP flows the
migration ports carried, and whether any of their bytes were readable protocol, not TLS.

Each captured frame keeps its first SNAPLEN bytes, enough for the start of every TCP segment's
payload: a cleartext NBD negotiation starts with "NBDMAGIC" then "IHAVEOPT", a cleartext QEMU
migration stream with "QEVM" and its version 3, and a TLS stream's every record with its
content type (20-23) and version 3.x.

QEMU's NBD with TLS alone is STARTTLS-shaped (the NBD protocol's): the server's greeting
("NBDMAGIC", "IHAVEOPT", its flags), the client's flags and its option request, STARTTLS (option
5), cross in clear before TLS begins. Ferry carries it in a TLS tunnel, so none of that may show
here: `Flows.clear` lists any magic seen in clear, `Flows.clear_after_tls` magic seen once a
direction's TLS began, `Flows.options` every NBD option requested in clear.
"""

from __future__ import annotations

import os
import signal
import struct
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

SNAPLEN = 256
# QEMU's stream magic with its version (8 bytes, as the NBD words: no chance match in ciphertext)
CLEAR_MAGIC = (b"NBDMAGIC", b"IHAVEOPT", b"QEVM\x00\x00\x00\x03")
TLS_TYPES = frozenset({20, 21, 22, 23})


@dataclass
class Flows:
    """What the capture saw on TCP ports `ports` (either end)."""

    segments: int = 0
    flows: dict[tuple[int, int], bytes] = field(default_factory=dict)  # (sport, dport) -> first
    clear: list[str] = field(default_factory=list)  # a readable magic seen, with its ports
    clear_after_tls: list[str] = field(default_factory=list)
    options: list[int] = field(default_factory=list)  # NBD options requested in clear
    tls_from: set[tuple[int, int]] = field(default_factory=set)  # directions whose TLS began

    def connections(self, low: int, high: int) -> set[tuple[int, int]]:
        """(server port in [low, high], client port) of each connection that carried data."""
        return {
            (server, client)
            for a, b in self.flows
            for server, client in ((a, b), (b, a))
            if low <= server <= high and not low <= client <= high
        }

    def not_tls(self, low: int, high: int) -> dict[tuple[int, int], bytes]:
        """Flows touching ports [low, high] whose first payload is not a TLS record header."""
        return {
            flow: first[:8]
            for flow, first in self.flows.items()
            if any(low <= p <= high for p in flow) and not _is_tls(first)
        }

    def never_tls(self, low: int, high: int) -> set[tuple[int, int]]:
        """Directions of flows touching [low, high] in which no TLS record was seen."""
        return {f for f in self.flows if any(low <= p <= high for p in f)} - self.tls_from


def _is_tls(payload: bytes) -> bool:
    return len(payload) >= 3 and payload[0] in TLS_TYPES and payload[1] == 3


@contextmanager
def capture(ifname: str, path: Path, ports: tuple[int, int]) -> Iterator[Path]:
    """tcpdump on `ifname` (root namespace) for TCP on `ports` (a range) while the block runs."""
    argv = ["tcpdump", "-i", ifname, "-s", str(SNAPLEN), "-U", "-n", "-w", str(path),
            "tcp", "portrange", f"{ports[0]}-{ports[1]}"]  # fmt: skip
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 10
        while not path.exists() or path.stat().st_size == 0:  # the pcap header: listening
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else b""
            assert time.monotonic() < deadline, "tcpdump did not start"
            time.sleep(0.05)
        yield path
    finally:
        os.kill(proc.pid, signal.SIGINT)
        proc.wait(timeout=30)


def read(path: Path, ports: tuple[int, int]) -> Flows:
    """The TCP flows of a pcap (Ethernet, IPv4) touching `ports`: each direction's first
    payload, and every segment's payload searched for cleartext magic."""
    data = path.read_bytes()
    magic = struct.unpack("<I", data[:4])[0]
    assert magic in (0xA1B2C3D4, 0xA1B23C4D), f"not a little-endian pcap: {magic:#x}"
    flows, offset = Flows(), 24
    while offset + 16 <= len(data):
        caplen = struct.unpack("<I", data[offset + 8 : offset + 12])[0]
        frame = data[offset + 16 : offset + 16 + caplen]
        offset += 16 + caplen
        _segment(flows, frame, ports)
    return flows


def _segment(flows: Flows, frame: bytes, ports: tuple[int, int]) -> None:
    if len(frame) < 34 or frame[12:14] != b"\x08\x00" or frame[23] != 6:  # IPv4, TCP
        return
    ip = frame[14:]
    tcp = ip[(ip[0] & 0x0F) * 4 :]
    if len(tcp) < 20:
        return
    sport, dport = struct.unpack("!HH", tcp[:4])
    payload = tcp[(tcp[12] >> 4) * 4 :]
    if not payload or not any(ports[0] <= p <= ports[1] for p in (sport, dport)):
        return
    flows.segments += 1
    direction = (sport, dport)
    flows.flows.setdefault(direction, payload)
    if direction not in flows.tls_from and _is_tls(payload):
        flows.tls_from.add(direction)
    for word in CLEAR_MAGIC:
        if word in payload:
            seen = f"{word[:8]!r} on {sport}->{dport}"
            flows.clear.append(seen)
            if direction in flows.tls_from:
                flows.clear_after_tls.append(seen)
    at = payload.find(b"IHAVEOPT")
    to_server = ports[0] <= dport <= ports[1]  # the server's greeting has it too, then flags
    if to_server and direction not in flows.tls_from and at >= 0 and len(payload) >= at + 12:
        flows.options.append(struct.unpack("!I", payload[at + 8 : at + 12])[0])
