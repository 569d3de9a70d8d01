"""A host drained live on real QEMU guests: 3 hosts, 6 instances on host1, each pinged every
20 ms from the root namespace while `ferry host maintenance enter host1 --wait` empties it.
Every instance lands on host2 or host3 (balanced), answers at the same IP without a reboot, the
host is `in_maintenance` and receives nothing new, and exit puts it back in service.

Needs root and qemu-system-x86_64.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import expect

from tests.lab.support import Pinger, answers, ferry, ferry_json, lab_env, page, running_lab
from tests.ui.browser import OPERATOR, Dashboard, chromium, dashboard_tab

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="the lab needs root (namespaces, taps)"),
    pytest.mark.skipif(shutil.which("qemu-system-x86_64") is None, reason="no QEMU installed"),
]
PREFIX = "fld"  # not the default 'fry', nor the other lab modules' prefixes
COUNT = 6
MAX_LOST_PROBES = 50  # 1 s of 20 ms probes: generous, TCG is slow and the machine is busy


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    with running_lab(tmp_path_factory.mktemp("lab"), PREFIX, hosts=3) as lab_dir:
        yield lab_dir


def consoles(lab: Path, instance_id: str) -> str:
    """The end of the instance's serial console on every host (what a reboot left there)."""
    logs = sorted(lab.glob(f"hosts/*/run/**/{instance_id}*/**/*.log")) + sorted(
        lab.glob(f"hosts/*/run/{instance_id}/*")
    )
    return "\n".join(
        f"--- {path}\n" + "\n".join(path.read_text(errors="replace").splitlines()[-40:])
        for path in logs
        if path.is_file() and path.stat().st_size < 10_000_000
    )


def test_drain_moves_every_instance_live_and_keeps_the_host_out(lab: Path) -> None:
    names = [f"d{n}" for n in range(COUNT)]
    for name in names:
        ferry("instance", "create", name, "--flavor", "tiny", "--network", "lab",
              "--host", "host1", "--wait", lab=lab)  # fmt: skip
    shown = {n: ferry_json("instance", "show", n, lab=lab) for n in names}
    ips = {n: shown[n]["ports"][0]["ip"] for n in names}
    assert all(answers(ip) for ip in ips.values())
    before = {n: page(ip) for n, ip in ips.items()}
    pingers = {n: Pinger(ip) for n, ip in ips.items()}
    time.sleep(1)

    started = time.monotonic()
    out = ferry("host", "maintenance", "enter", "host1", "--reason", "kernel update", "--wait",
                lab=lab).stdout  # fmt: skip
    took = time.monotonic() - started
    time.sleep(1)
    blackouts = {n: p.stop() for n, p in pingers.items()}
    print(f"\n{out}\ndrain of {COUNT} instances: {took:.1f} s")
    status = ferry_json("host", "maintenance", "status", "host1", lab=lab)
    moves = {m["instance"]: m for m in status["migrations"]}
    for name in names:
        print(f"  {name} -> {moves[name]['destination']}: downtime {moves[name]['downtime_ms']}"
              f" ms, ping {blackouts[name]}")  # fmt: skip

    assert status["maintenance"]["state"] == "in_maintenance", status["drain"]
    assert status["drain"]["state"] == "completed" and status["instances_remaining"] == 0
    where = {n: ferry_json("instance", "show", n, lab=lab)["host"] for n in names}
    assert Counter(where.values()) == {"host2": COUNT // 2, "host3": COUNT // 2}
    for name, ip in ips.items():
        after = page(ip)  # the TCP endpoint answers at the same IP, without a reboot
        same = (after["ip"], after["boot_id"]) == (before[name]["ip"], before[name]["boot_id"])
        assert same, f"{name} rebooted: {after}\n{consoles(lab, shown[name]['id'])}"
        assert blackouts[name].lost <= MAX_LOST_PROBES, (name, blackouts[name])
        assert moves[name]["state"] == "completed" and moves[name]["attempt"] == 1

    ferry("instance", "create", "newcomer", "--flavor", "tiny", "--network", "lab", lab=lab)
    assert ferry_json("instance", "show", "newcomer", lab=lab)["host"] != "host1"
    refused = ferry("host", "maintenance", "enter", "host1", "--reason", "again", lab=lab,
                    check=False)  # fmt: skip
    assert refused.returncode == 1 and "HTTP 409" in refused.stderr

    exit_ = ("host", "maintenance", "exit", "host1", "--reason", "done", "-f", "json")
    back = json.loads(ferry(*exit_, lab=lab).stdout)
    assert back["maintenance"]["state"] == "in_service" and back["maintenance"]["schedulable"]
    for name in [*names, "newcomer"]:
        ferry("instance", "delete", name, "--wait", "--timeout", "60", lab=lab, check=False)


class LabSite:
    """The lab's controller as the browser sees it, with an operator's token."""

    def __init__(self, lab: Path) -> None:
        env = lab_env(lab)
        self.url = env["FERRY_URL"]
        self.ca = env["FERRY_CA"]
        self.admin = Path(env["FERRY_TOKEN_FILE"]).read_text().strip()
        token = ferry_json("token", "create", OPERATOR, "--role", "operator", lab=lab)
        self.tokens = {"operator": token["secret"]}

    def api(self, method: str, path: str, **kwargs: Any) -> Any:
        headers = {"Authorization": f"Bearer {self.admin}"}
        response = httpx.request(
            method, self.url + path, headers=headers, verify=self.ca, timeout=30, **kwargs
        )
        response.raise_for_status()
        return response.json()


def test_dashboard_drains_a_host_of_the_real_cluster(
    lab: Path, request: pytest.FixtureRequest
) -> None:
    """An operator drains host2 from the dashboard: the dry-run plan, the confirmation, the
    drain to its summary, and exit; the guests keep answering at their IPs, never rebooted."""
    names = [f"u{n}" for n in range(3)]
    for name in names:
        ferry("instance", "create", name, "--flavor", "tiny", "--network", "lab",
              "--host", "host2", "--wait", lab=lab)  # fmt: skip
    ips = {n: ferry_json("instance", "show", n, lab=lab)["ports"][0]["ip"] for n in names}
    assert all(answers(ip) for ip in ips.values())
    before = {n: page(ip) for n, ip in ips.items()}
    site = LabSite(lab)
    cert = lab / "pki" / "issued" / "controller" / "cert.pem"
    pingers = {n: Pinger(ip) for n, ip in ips.items()}
    try:
        with chromium(cert) as browser, dashboard_tab(browser, site, request) as board:
            _drain_from_the_dashboard(board, "host2")
    finally:
        blackouts = {n: p.stop() for n, p in pingers.items()}
    print("\n".join(f"  {n}: ping {b}" for n, b in blackouts.items()))
    for name, ip in ips.items():
        after = page(ip)
        assert (after["ip"], after["boot_id"]) == (before[name]["ip"], before[name]["boot_id"])
        assert blackouts[name].lost <= MAX_LOST_PROBES, (name, blackouts[name])
    where = {ferry_json("instance", "show", n, lab=lab)["host"] for n in names}
    assert where <= {"host1", "host3"}
    for name in names:
        ferry("instance", "delete", name, "--wait", "--timeout", "60", lab=lab, check=False)


def _drain_from_the_dashboard(board: Dashboard, host: str) -> None:
    page_ = board.page
    board.sign_in("operator")
    expect(board.host_row(host).locator('[data-col="instances"]')).to_have_text("3")
    board.open_host(host)
    page_.get_by_test_id("action-enter").click()
    dialog = board.dialog("enter")
    dialog.get_by_test_id("reason").fill("BMC firmware")
    dialog.get_by_test_id("preview").click()
    expect(dialog.get_by_test_id("verdict")).to_contain_text("Pre-check passed")
    placements = dialog.get_by_test_id("placements").locator("tbody tr")
    expect(placements).to_have_count(3)
    destinations = {placements.nth(i).locator("td").nth(2).inner_text() for i in range(3)}
    assert destinations == {"host1", "host3"}, destinations
    board.shot("plan")

    dialog.get_by_test_id("confirm").click()
    badge = page_.get_by_test_id("maintenance-badge")
    expect(badge).to_have_text("in maintenance", timeout=180_000)
    expect(page_.get_by_test_id("drain-state")).to_have_text("completed")
    expect(page_.get_by_test_id("drain-overall")).to_contain_text("3 / 3 moved")
    summary = page_.get_by_test_id("drain-summary").locator("tbody tr")
    expect(summary).to_have_count(3)
    for i in range(3):
        expect(summary.nth(i).locator("td").nth(2)).to_have_text("completed")
    board.shot("drained")

    page_.get_by_test_id("action-exit").click()
    board.dialog("exit").get_by_test_id("reason").fill("firmware done")
    board.dialog("exit").get_by_test_id("confirm").click()
    expect(badge).to_have_text("in service")
    board.shot("back-in-service")
