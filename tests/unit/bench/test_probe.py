"""The pinger's blackout arithmetic and the link baseline's sink/source, on loopback."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from ferry.bench.probe import blackout_of, summary
from tests.cli.live import free_port


def _ping_output(answered: list[int]) -> str:
    return "\n".join(f"64 bytes from 198.19.0.5: icmp_seq={n} ttl=64 time=0.3 ms" for n in answered)


def test_the_longest_run_of_lost_probes_is_the_blackout() -> None:
    answered = [1, 2, 3, 7, 8, 10, 11, 12, 20, 21]  # gaps: 4-6 (3), 9 (1), 13-19 (7)
    blackout = blackout_of(_ping_output(answered))  # 10 ms probes by default
    assert (blackout.answered, blackout.lost, blackout.longest_gap) == (10, 11, 7)
    assert blackout.ms == pytest.approx(70.0)
    assert blackout_of(_ping_output(answered), interval=0.02).ms == pytest.approx(140.0)


def test_probes_after_the_last_answer_are_not_counted() -> None:
    blackout = blackout_of(_ping_output([1, 2, 3]) + "\nno answer yet for icmp_seq=4")
    assert (blackout.lost, blackout.longest_gap) == (0, 0)


def test_duplicate_answers_count_once_and_no_answer_is_an_error() -> None:
    assert blackout_of(_ping_output([1, 1, 3])).lost == 1
    with pytest.raises(ValueError, match="no probe"):
        blackout_of("PING 198.19.0.5 56 data bytes\n")


def test_the_silence_is_the_longest_time_between_answers_when_ping_timed_them() -> None:
    # 10 ms probes; 3-5 lost, 6 answered 40 ms late (arrives with 7): 2 -> 6 is 80 ms silent
    received = {1: 0.01, 2: 0.02, 6: 0.10, 7: 0.10, 9: 0.12}
    lines = [f"[{1000 + t:.6f}] 64 bytes from 198.19.0.5: icmp_seq={n} ttl=64 time=0.3 ms"
             for n, t in received.items()]  # fmt: skip
    blackout = blackout_of("\n".join(lines), interval=0.01)
    assert blackout.longest_gap == 3
    assert blackout.ms == pytest.approx(30.0)
    assert blackout.gap_from == pytest.approx(1000.02)
    assert blackout.gap_to == pytest.approx(1000.10)
    assert blackout.silence_ms == pytest.approx(80.0)
    untimed = blackout_of(_ping_output(list(received)))
    assert (untimed.gap_from, untimed.silence_ms) == (None, None)


def test_summary_is_median_nearest_rank_p99_and_max() -> None:
    values = [float(v) for v in range(1, 101)]  # 1..100
    assert summary(values) == {"median": 50.5, "p99": 99.0, "max": 100.0}
    assert summary([30.0, 20.0, 40.0]) == {"median": 30.0, "p99": 40.0, "max": 40.0}
    assert summary([]) == {"median": 0.0, "p99": 0.0, "max": 0.0}


def test_link_sink_measures_what_the_source_sent() -> None:
    py = [sys.executable, "-m", "ferry.bench.link"]
    port = free_port()
    argv = [*py, "sink", "127.0.0.1", str(port)]
    sink = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
    try:
        assert sink.stdout is not None and sink.stdout.readline().strip() == "ready"
        subprocess.run([*py, "source", "127.0.0.1", str(port), "16"], check=True, timeout=60)
        measured = json.loads(sink.stdout.readline())
    finally:
        sink.kill()
        sink.wait()
    assert measured["bytes"] == 16 * 2**20
    assert measured["seconds"] > 0
