"""A pinger (every 20 ms by default, 10 ms for the drain bench): how long a guest stopped
answering while something happened to it."""

from __future__ import annotations

import asyncio
import re
import signal
from dataclasses import dataclass

PROBE_INTERVAL = 0.02  # seconds between probes


@dataclass(frozen=True)
class Blackout:
    answered: int
    lost: int
    longest_gap: int  # the longest run of consecutive lost probes
    interval: float = PROBE_INTERVAL  # seconds between probes

    @property
    def ms(self) -> float:
        return self.longest_gap * self.interval * 1000

    def __str__(self) -> str:
        return (
            f"{self.answered} probes answered, {self.lost} lost, longest gap "
            f"{self.longest_gap} probes = {self.ms:.0f} ms blackout"
        )


def blackout_of(ping_output: str, interval: float = PROBE_INTERVAL) -> Blackout:
    """Count the sequence numbers `ping` never printed an answer for (those after the last
    answer were still in flight when it stopped: not counted)."""
    seqs = sorted({int(m) for m in re.findall(r"icmp_seq=(\d+)", ping_output)})
    if not seqs:
        raise ValueError("no probe was answered at all")
    missing = sorted(set(range(1, seqs[-1] + 1)) - set(seqs))
    longest = run = 0
    for prev, cur in zip([0, *missing], missing, strict=False):
        run = run + 1 if cur == prev + 1 else 1
        longest = max(longest, run)
    return Blackout(len(seqs), len(missing), longest, interval)


class Pinger:
    """`ping -i <interval>` from this namespace to `ip`, until stop() (below 0.2 s needs root)."""

    def __init__(self, proc: asyncio.subprocess.Process, interval: float) -> None:
        self.proc, self.interval = proc, interval

    @classmethod
    async def start(cls, ip: str, interval: float = PROBE_INTERVAL) -> Pinger:
        proc = await asyncio.create_subprocess_exec(
            "ping", "-n", "-i", str(interval), "-W", "1", ip,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        return cls(proc, interval)

    async def stop(self) -> Blackout:
        self.proc.send_signal(signal.SIGINT)
        out, _ = await asyncio.wait_for(self.proc.communicate(), 10)
        return blackout_of(out.decode(), self.interval)
