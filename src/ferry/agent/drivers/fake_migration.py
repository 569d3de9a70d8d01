"""The fake driver's model of a pre-copy live migration, computed from elapsed time.

Pass 1 sends the whole memory at the bandwidth; each later pass sends what the guest dirtied
during the previous one. The migration completes when the remainder can be sent within the
downtime limit. With auto-converge the guest is throttled like QEMU does it (20% from pass 3,
then +10% a pass, at most 99%), so a guest that dirties faster than the link finally converges.
Post-copy, once started, sends the remainder at the bandwidth with the guest already running on
the destination. The model is a pure function of its inputs, so readings are repeatable.
"""

from __future__ import annotations

from dataclasses import dataclass

from ferry.agent.drivers.base import MigrationParams, MigrationProgress

MIB = 2**20
SWITCHOVER_MS = 5  # fixed cost of the final stop-and-copy besides the remainder
MAX_PASSES = 100_000


@dataclass(frozen=True)
class SimulatedMigration:
    ram_bytes: int
    dirty_rate_bytes: int
    params: MigrationParams
    postcopy_at: float | None = None  # seconds after start, when post-copy was started

    def throttle(self, passes: int) -> float:
        if not self.params.auto_converge or passes < 3:
            return 0.0
        return min(0.2 + 0.1 * (passes - 3), 0.99)

    def at(self, elapsed: float) -> MigrationProgress:
        bandwidth = self.params.max_bandwidth_bytes
        sent, clock, passes, to_send = 0, 0.0, 1, self.ram_bytes
        while passes < MAX_PASSES:
            duration = to_send / bandwidth
            if self.postcopy_at is not None and self.postcopy_at < clock + duration:
                return self._postcopy(elapsed, sent, clock, passes, to_send)
            if clock + duration > elapsed:
                done = int((elapsed - clock) * bandwidth)
                return self._reading("active", sent + done, to_send - done, passes, elapsed)
            sent, clock = sent + to_send, clock + duration
            rate = self.dirty_rate_bytes * (1 - self.throttle(passes))
            dirtied = min(self.ram_bytes, int(rate * duration))
            downtime_ms = dirtied / bandwidth * 1000 + SWITCHOVER_MS
            if downtime_ms <= self.params.downtime_limit_ms:
                total_s = clock + downtime_ms / 1000
                if elapsed < total_s:
                    return self._reading("device", sent, dirtied, passes, elapsed)
                reading = self._reading("completed", sent + dirtied, 0, passes, total_s)
                reading.downtime_ms = round(downtime_ms)
                reading.total_time_ms = round(total_s * 1000)
                return reading
            passes, to_send = passes + 1, max(dirtied, 1)
        return self._reading("active", sent, to_send, passes, elapsed)

    def _postcopy(
        self, elapsed: float, sent: int, clock: float, passes: int, to_send: int
    ) -> MigrationProgress:
        assert self.postcopy_at is not None
        start = max(self.postcopy_at, clock)
        already = int((start - clock) * self.params.max_bandwidth_bytes)
        remaining = to_send - already
        end = start + remaining / self.params.max_bandwidth_bytes
        if elapsed < end:
            done = int((elapsed - start) * self.params.max_bandwidth_bytes)
            return self._reading(
                "postcopy-active", sent + already + done, remaining - done, passes, elapsed
            )
        reading = self._reading("completed", sent + to_send, 0, passes, end)
        reading.downtime_ms = SWITCHOVER_MS
        reading.total_time_ms = round(end * 1000)
        return reading

    def _reading(
        self, status: str, transferred: int, remaining: int, passes: int, elapsed: float
    ) -> MigrationProgress:
        bandwidth = self.params.max_bandwidth_bytes
        return MigrationProgress(
            status=status,
            total_bytes=self.ram_bytes,
            transferred_bytes=transferred,
            remaining_bytes=max(remaining, 0),
            passes=passes,
            dirty_rate_bytes=int(self.dirty_rate_bytes * (1 - self.throttle(passes))),
            throughput_mbps=bandwidth * 8 / 1e6,
            expected_downtime_ms=round(max(remaining, 0) / bandwidth * 1000),
            total_time_ms=round(elapsed * 1000),
        )
