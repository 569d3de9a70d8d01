"""`ferry lab up --driver fake`: the same cluster as the real lab with simulated hosts (no QEMU,
no root), driven by the installed script: up, env, use it, status, down."""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.cli.live import FERRY

PREFIX = "flk"  # its own, unlike any real lab's: `lab down` falls back to it without a record


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [FERRY, *args], capture_output=True, text=True, timeout=120, env=env, check=False
    )


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Path]:
    up = run(
        "lab", "up", "--driver", "fake", "--hosts", "3", "--instances", "4",
        "--dir", str(tmp_path), "--prefix", PREFIX,
    )  # fmt: skip
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        yield tmp_path
    finally:
        run("lab", "down", "--dir", str(tmp_path), "--prefix", PREFIX)


def environment(lab: Path) -> dict[str, str]:
    """What `eval "$(ferry lab env)"` sets, on top of this environment."""
    printed = run("lab", "env", "--dir", str(lab))
    assert printed.returncode == 0, printed.stderr
    settings = dict(re.findall(r"^export (FERRY_\w+)=(\S+)$", printed.stdout, re.MULTILINE))
    assert set(settings) == {"FERRY_URL", "FERRY_TOKEN_FILE", "FERRY_CA"}
    return {**os.environ, **settings}


def listed(env: dict[str, str], *args: str) -> Any:
    result = run(*args, "-f", "json", env=env)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_a_fake_lab_is_a_working_cluster_and_goes_away_whole(lab: Path) -> None:
    env = environment(lab)
    hosts = listed(env, "host", "list")
    assert [(h["name"], h["liveness"]) for h in hosts] == [
        ("host1", "up"),
        ("host2", "up"),
        ("host3", "up"),
    ]
    instances = listed(env, "instance", "list")
    assert len(instances) == 4 and {i["state"] for i in instances} == {"running"}
    assert len({i["host"] for i in instances}) == 3  # spread by the scheduler

    drained = run("host", "maintenance", "enter", "host1", "--reason", "try", "--wait", env=env)
    assert drained.returncode == 0, drained.stdout + drained.stderr
    assert all(i["host"] != "host1" for i in listed(env, "instance", "list"))

    record = json.loads((lab / "lab.json").read_text())
    pids = [record["controller_pid"], *(h["pid"] for h in record["hosts"])]
    status = run("lab", "status", "--dir", str(lab)).stdout
    assert status.count("running") == 4, status  # the controller and each host's agent
    down = run("lab", "down", "--dir", str(lab), "--prefix", PREFIX)
    assert down.returncode == 0, down.stderr
    deadline = time.monotonic() + 10
    while any(alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(alive(pid) for pid in pids)
    again = run("lab", "status", "--dir", str(lab))
    assert again.returncode == 1 and "no lab" in again.stderr
