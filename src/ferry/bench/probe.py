"""A pinger (every 10 ms, both lab benches): how long a guest stopped answering while something
happened to it, counted two ways. The blackout: the longest run of probes never answered, times
the interval (what the prober sees; a probe answered late counts as answered). The silence: the
longest wall-clock time between two consecutive answers (`ping -D` receipt times), which also
holds the probes answered late and the wait for the next probe: what the wire sees. Its two
timestamps can be set against QMP event timestamps or a capture."""

from __future__ import annotations

import asyncio
import itertools
import math
import re
import signal
import statistics
from dataclasses import dataclass

PROBE_INTERVAL = 0.01  # seconds between probes


@dataclass(frozen=True)
class Blackout:
    answered: int
    lost: int
    longest_gap: int  # the longest run of consecutive lost probes
    interval: float = PROBE_INTERVAL  # seconds between probes
    # Unix times of the two consecutive answers furthest apart (`ping -D`), None when ping
    # printed no timestamps
    gap_from: float | None = None
    gap_to: float | None = None

    @property
    def ms(self) -> float:
        return self.longest_gap * self.interval * 1000

    @property
    def silence_ms(self) -> float | None:
        if self.gap_from is None or self.gap_to is None:
            return None
        return (self.gap_to - self.gap_from) * 1000

    def __str__(self) -> str:
        return (
            f"{self.answered} probes answered, {self.lost} lost, longest gap "
            f"{self.longest_gap} probes = {self.ms:.0f} ms blackout"
        )


def blackout_of(ping_output: str, interval: float = PROBE_INTERVAL) -> Blackout:
    """Count the sequence numbers `ping` never printed an answer for (those after the last
    answer were still in flight when it stopped: not counted), and find the longest time
    between consecutive answers when `ping -D` timed them."""
    stamps: dict[int, float] = {}
    for line in ping_output.splitlines():
        if (seq := re.search(r"icmp_seq=(\d+)", line)) and "bytes from" in line:
            stamp = re.match(r"\[(\d+\.\d+)\]", line)
            stamps.setdefault(int(seq[1]), float(stamp[1]) if stamp else 0.0)
    seqs = sorted(stamps)
    if not seqs:
        raise ValueError("no probe was answered at all")
    missing = sorted(set(range(1, seqs[-1] + 1)) - set(seqs))
    longest = run = 0
    for prev, cur in zip([0, *missing], missing, strict=False):
        run = run + 1 if cur == prev + 1 else 1
        longest = max(longest, run)
    times = sorted(stamps.values())
    if len(times) < 2 or not times[0]:
        return Blackout(len(seqs), len(missing), longest, interval)
    gap_from, gap_to = max(itertools.pairwise(times), key=lambda p: p[1] - p[0])
    return Blackout(len(seqs), len(missing), longest, interval, gap_from, gap_to)


def summary(values: list[float]) -> dict[str, float]:
    """Median, p99 (nearest rank) and max of some blackouts (or downtimes); zeros for none."""
    if not values:
        return {"median": 0.0, "p99": 0.0, "max": 0.0}
    ordered = sorted(values)
    rank = max(0, math.ceil(0.99 * len(ordered)) - 1)
    return {"median": statistics.median(ordered), "p99": ordered[rank], "max": ordered[-1]}


class Pinger:
    """`ping -D -i <interval>` from this namespace to `ip`, until stop() (below 0.2 s needs
    root)."""

    def __init__(self, proc: asyncio.subprocess.Process, interval: float) -> None:
        self.proc, self.interval = proc, interval

    @classmethod
    async def start(cls, ip: str, interval: float = PROBE_INTERVAL) -> Pinger:
        proc = await asyncio.create_subprocess_exec(
            "ping", "-n", "-D", "-i", str(interval), "-W", "1", ip,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        return cls(proc, interval)

    async def stop(self) -> Blackout:
        self.proc.send_signal(signal.SIGINT)
        out, _ = await asyncio.wait_for(self.proc.communicate(), 10)
        return blackout_of(out.decode(), self.interval)
