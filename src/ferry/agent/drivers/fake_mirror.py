"""The fake driver's model of a local disk's mirror, computed from elapsed time like the stream
of fake_migration.py: what the QEMU driver's `blockdev-mirror` (qemu_mirror.py: sync `top`,
`write-blocking`) reports while a local disk moves ahead of its guest's RAM.

What there is to copy is the overlay's allocated bytes (the backing image is in the
destination's cache already). A fake overlay holds no data, so a quarter of its virtual size is
taken as allocated (`ALLOCATED_SHARE`). The background copy runs at the migration's bandwidth,
and a bandwidth change (a tune) applies from the moment it is made on: the model keeps each
speed and since when it held (`speeds`), so the past stays as it was. The guest's writes
(write-blocking) reach both ends before they complete, so they add to what there is to copy and
to what is copied alike: the total grows at the write rate and the copy converges however fast
the guest writes. The mirror is ready (in sync) once the background copy is done. Readings are
repeatable: a pure function of the model and the elapsed time.
"""

from __future__ import annotations

import json
import math
import secrets
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from ferry.agent.drivers.base import DiskSpec, MigrationProgress

# A fake overlay's allocated bytes are its virtual size divided by this (a quarter): a guest's
# overlay holds what it wrote since its first start, a part of its disk.
ALLOCATED_SHARE = 4
KIB = 1024


def allocated_bytes(disk: DiskSpec) -> int:
    """What a mirror of this fake disk copies in the background."""
    return disk.size_bytes // ALLOCATED_SHARE


@dataclass(frozen=True)
class MirrorReading:
    total_bytes: int
    copied_bytes: int
    ready: bool
    throughput_mbps: float


@dataclass(frozen=True)
class SimulatedMirror:
    allocated_bytes: int  # the overlay's allocated bytes, copied in the background
    write_rate_bytes: int  # the guest's disk writes per second, reaching both ends
    # The background copy's speed: (from this many seconds after the start on, bytes per
    # second), in time order; the first from 0, and each tune adds one.
    speeds: tuple[tuple[float, int], ...]

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> SimulatedMirror:
        """The inverse of `dataclasses.asdict` (the fake's state file keeps it as JSON)."""
        speeds = tuple((float(since), int(speed)) for since, speed in raw["speeds"])
        return cls(int(raw["allocated_bytes"]), int(raw["write_rate_bytes"]), speeds)

    def _steps(self) -> Iterator[tuple[float, float, int]]:
        """(from, until, speed) of each step; the last one lasts."""
        for i, (since, speed) in enumerate(self.speeds):
            until = self.speeds[i + 1][0] if i + 1 < len(self.speeds) else math.inf
            yield since, until, speed

    @property
    def ready_at(self) -> float:
        """Seconds after the start when the background copy is done (inf: never)."""
        left = float(self.allocated_bytes)
        for since, until, speed in self._steps():
            if left <= (until - since) * speed:
                return since + left / speed if left > 0 else since
            left -= (until - since) * speed
        return math.inf

    def _background(self, elapsed: float) -> int:
        copied = sum(
            (min(elapsed, until) - since) * speed
            for since, until, speed in self._steps()
            if elapsed > since
        )
        return min(self.allocated_bytes, int(copied))

    def _speed(self, elapsed: float) -> int:
        return next(speed for since, until, speed in self._steps() if elapsed < until)

    def at(self, elapsed: float) -> MirrorReading:
        elapsed = max(elapsed, 0.0)
        background = self._background(elapsed)
        written = int(elapsed * self.write_rate_bytes)
        ready = background >= self.allocated_bytes
        rate = self.write_rate_bytes if ready else self._speed(elapsed)  # what crosses the link
        return MirrorReading(
            total_bytes=self.allocated_bytes + written,
            copied_bytes=background + written,
            ready=ready,
            throughput_mbps=rate * 8 / 1e6,
        )

    def tuned(self, elapsed: float, bandwidth_bytes: int) -> SimulatedMirror:
        """The same mirror going on at `bandwidth_bytes` from `elapsed` seconds on (what was
        copied before stays as it was)."""
        since = max(elapsed, self.speeds[-1][0])
        return replace(self, speeds=(*self.speeds, (since, bandwidth_bytes)))


def mirror_of(disk: DiskSpec, write_kibps: int, bandwidth_bytes: int) -> SimulatedMirror:
    """The mirror of a guest's disk that writes `write_kibps` KiB/s, started at this speed."""
    return SimulatedMirror(allocated_bytes(disk), write_kibps * KIB, ((0.0, bandwidth_bytes),))


def with_disk(progress: MigrationProgress, disk: MirrorReading) -> MigrationProgress:
    """`progress` with the mirror's reading beside it."""
    return replace(
        progress,
        disk_total_bytes=disk.total_bytes,
        disk_copied_bytes=disk.copied_bytes,
        disk_ready=disk.ready,
        disk_throughput_mbps=disk.throughput_mbps,
    )


def mirroring(disk: MirrorReading) -> MigrationProgress:
    """A reading while only the disk moves (the RAM stream has not started)."""
    return with_disk(MigrationProgress(status="mirroring"), disk)


# -- the copy's content -------------------------------------------------------------------------
#
# A fake disk is a small JSON file (fake_disks.py); its `data` stands for what the guest wrote
# (set at the guest's first start, kept by every later start). A mirror's bytes are simulated,
# but what a completed copy holds is not: at the hand-over (QEMU: `block-job-cancel` of the
# ready job at pre-switchover) the source puts its disk's content on the wire, a directory its
# fake hosts share (`FERRY_FAKE_WIRE`), and the destination takes it into its copy when it
# becomes the guest's host (finish-destination). A copy that never completed keeps the empty
# overlay it was made as, so a check of the disk's content tells the two apart. Without a wire
# (hosts simulated at scale) no content moves.

WIRE_ENV = "FERRY_FAKE_WIRE"
CONTENT = ("image", "size", "data")  # what a disk holds, wherever it is (not its `base` path)


def read_disk(path: Path) -> dict[str, Any]:
    """A fake disk's record; {} when there is none or it cannot be read."""
    try:
        raw = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return raw if isinstance(raw, dict) else {}


def _write_json(path: Path, record: Mapping[str, Any]) -> None:
    partial = path.with_name(f".{path.name}.new")
    partial.write_text(json.dumps(record))
    partial.replace(path)


def mark_written(path: Path) -> None:
    """The guest's first start on its disk: it writes data of its own (kept by later starts)."""
    record = read_disk(path)
    if record and "data" not in record:
        _write_json(path, {**record, "data": secrets.token_hex(16)})


def clear_wire(wire: Path | None, instance_id: str) -> None:
    """A new copy starts: nothing an earlier attempt sent may be taken for it."""
    if wire is not None:
        (wire / f"{instance_id}.json").unlink(missing_ok=True)


def send_copy(wire: Path | None, instance_id: str, disk: Path) -> None:
    """The copy completed: the source's content goes to the destination."""
    record = read_disk(disk)
    if wire is not None and record:
        wire.mkdir(parents=True, exist_ok=True)
        _write_json(wire / f"{instance_id}.json", {k: record.get(k) for k in CONTENT})


def take_copy(wire: Path | None, instance_id: str, disk: Path) -> bool:
    """The destination's copy gets what the source sent, if it sent anything."""
    sent = wire / f"{instance_id}.json" if wire is not None else None
    if sent is None or not sent.is_file() or not disk.is_file():
        return False
    _write_json(disk, {**read_disk(disk), **read_disk(sent)})
    sent.unlink(missing_ok=True)
    return True
