"""The operators' dashboard in a real browser: sign-in, the hosts overview (sorting, filters,
live updates), a host drained from the dry-run plan through the live progress to the summary
and back in service, a reader's view without actions, refusals with the API's message, and the
event log."""

from __future__ import annotations

import re

from playwright.sync_api import expect

from tests.functional.cluster import wait_until
from tests.ui.browser import OPERATOR, READER, Dashboard
from tests.ui.conftest import HOSTS, INSTANCES

DRAIN_TIMEOUT_MS = 120_000
# Slow enough (128 MiB at 24 MiB/s, one stream at a time) that the progress shows on the way.
SLOW_DRAIN = "max_outbound=1 migration.max_bandwidth_mib=24"


def _progress_seen_mid_way(board: Dashboard) -> None:
    """Some migration's bar shows bytes sent, short of the total, while the drain runs."""
    board.page.wait_for_function(
        """() => [...document.querySelectorAll('[data-testid^="progress-"]')].some((bar) => {
             const now = Number(bar.getAttribute('aria-valuenow'));
             const max = Number(bar.getAttribute('aria-valuemax'));
             return max > 0 && now > 0 && now < max;
           })""",
        timeout=DRAIN_TIMEOUT_MS,
    )


def test_operator_drains_a_host_from_the_plan_to_the_summary(dashboard: Dashboard) -> None:
    page = dashboard.page
    dashboard.sign_in("operator")
    table = page.get_by_test_id("hosts-table")
    expect(table.locator("tbody tr")).to_have_count(3)
    for host in HOSTS:
        expect(dashboard.host_row(host).locator('[data-col="liveness"]')).to_have_text("up")
    expect(dashboard.host_row("host1").locator('[data-col="instances"]')).to_have_text("3")
    expect(dashboard.host_row("host1").locator('[data-col="ram"]')).to_contain_text("384 MiB")
    dashboard.shot("hosts")

    dashboard.open_host("host1")
    expect(page.get_by_test_id("instances").locator("tbody tr")).to_have_count(3)
    page.get_by_test_id("action-enter").click()
    dialog = dashboard.dialog("enter")
    dialog.get_by_test_id("reason").fill("BIOS update")
    dialog.get_by_test_id("policy").fill(SLOW_DRAIN)
    dialog.get_by_test_id("preview").click()

    expect(dialog.get_by_test_id("verdict")).to_contain_text("Pre-check passed")
    placements = dialog.get_by_test_id("placements").locator("tbody tr")
    expect(placements).to_have_count(3)
    destinations = {placements.nth(i).locator("td").nth(2).inner_text() for i in range(3)}
    assert destinations == {"host2", "host3"}, destinations
    loads = dialog.get_by_test_id("loads").locator("tbody tr")
    expect(loads).to_have_count(2)
    expect(loads.first).to_contain_text("before")
    expect(loads.first).to_contain_text("after")
    expect(dialog.get_by_test_id("force")).to_have_count(0)
    dashboard.shot("plan")

    dialog.get_by_test_id("confirm").click()
    expect(dialog).to_have_count(0)
    expect(page.get_by_test_id("maintenance-badge")).to_have_text("draining")
    expect(page.get_by_test_id("drain-migrations")).to_be_visible()
    _progress_seen_mid_way(dashboard)
    expect(page.get_by_test_id("drain-overall")).to_be_visible()
    dashboard.shot("draining")

    expect(page.get_by_test_id("maintenance-badge")).to_have_text(
        "in maintenance", timeout=DRAIN_TIMEOUT_MS
    )
    expect(page.get_by_test_id("drain-state")).to_have_text("completed")
    expect(page.get_by_test_id("drain-overall")).to_contain_text("3 / 3 moved")
    summary = page.get_by_test_id("drain-summary").locator("tbody tr")
    expect(summary).to_have_count(3)
    for i in range(3):
        cells = summary.nth(i).locator("td")
        assert cells.nth(1).inner_text() in {"host2", "host3"}
        expect(cells.nth(2)).to_have_text("completed")
        expect(cells.nth(4)).to_have_text(re.compile(r"^\d+ ms$"))
        expect(cells.nth(5)).to_have_text(re.compile(r"^\d+\.\d s$"))
    expect(page.get_by_test_id("instances").locator("tbody tr td.empty")).to_have_count(1)
    history = page.get_by_test_id("history")
    expect(history).to_contain_text("entered")
    expect(history).to_contain_text("completed")
    expect(history).to_contain_text(OPERATOR)
    expect(history).to_contain_text("BIOS update")
    dashboard.shot("drained")

    page.get_by_test_id("action-exit").click()
    dialog = dashboard.dialog("exit")
    dialog.get_by_test_id("reason").fill("firmware done")
    dialog.get_by_test_id("confirm").click()
    expect(page.get_by_test_id("maintenance-badge")).to_have_text("in service")
    expect(page.get_by_test_id("action-enter")).to_be_visible()
    expect(history).to_contain_text("exited")
    dashboard.shot("back-in-service")

    api = dashboard.site.api("GET", "/v1/hosts/host1")
    assert api["maintenance"]["state"] == "in_service"
    where = {dashboard.site.api("GET", f"/v1/instances/{n}")["host"] for n in INSTANCES}
    assert where <= {"host2", "host3"}


def test_reader_sees_no_actions_and_is_told_why_an_action_is_refused(
    dashboard: Dashboard,
) -> None:
    page = dashboard.page
    dashboard.open()
    page.get_by_test_id("token").fill("ferry_not-a-real-token")
    page.get_by_test_id("signin-submit").click()
    expect(page.get_by_test_id("signin-error")).to_have_text(
        "Not signed in: the bearer token is unknown or revoked"
    )
    dashboard.sign_in("reader")
    expect(page.get_by_test_id("hosts-table").locator("tbody tr")).to_have_count(3)
    dashboard.open_host("host1")
    expect(page.get_by_test_id("read-only")).to_contain_text("role 'reader'")
    expect(page.get_by_test_id("actions")).to_have_count(0)
    actions = re.compile("maintenance|Disable|Enable|Retry")
    expect(page.get_by_role("button", name=actions)).to_have_count(0)
    dashboard.shot("reader")

    # The page's own action code, called as a button would: the API refuses, the page says why.
    page.evaluate(
        """async () => {
             const actions = await import('./js/actions.js');
             await actions.act('host1', 'disable', {reason: 'not mine to do'});
           }"""
    )
    notice = page.get_by_test_id("notice")
    expect(notice).to_contain_text("Not allowed")
    expect(notice).to_contain_text(f"token '{READER}' has role 'reader', which may not operate")
    dashboard.shot("reader-refused")
    assert dashboard.site.api("GET", "/v1/hosts/host1")["admin"]["state"] == "enabled"


def test_refused_actions_show_the_api_message(dashboard: Dashboard) -> None:
    page = dashboard.page
    dashboard.sign_in("operator")
    dashboard.open_host("host2")
    page.get_by_test_id("action-enter").click()
    dialog = dashboard.dialog("enter")
    dialog.get_by_test_id("preview").click()
    expect(page.get_by_test_id("dialog-error")).to_contain_text("a reason is required")
    dialog.get_by_test_id("reason").fill("PSU swap")
    dialog.get_by_test_id("preview").click()
    expect(dialog.get_by_test_id("verdict")).to_contain_text("holds no instance")

    # Someone else puts the host into maintenance meanwhile; confirming is then refused.
    body = {"reason": "someone else"}
    dashboard.site.api("POST", "/v1/hosts/host2/maintenance/enter", json=body)
    dialog.get_by_test_id("confirm").click()
    error = dialog.get_by_test_id("dialog-error")
    expect(error).to_contain_text("Refused: host 'host2': cannot enter maintenance in state")
    expect(dialog).to_be_visible()
    dashboard.shot("refused-409")
    dialog.get_by_test_id("cancel").click()
    expect(page.get_by_test_id("maintenance-badge")).to_have_text("in maintenance")

    # A drain policy the controller does not accept: 422 with its message.
    dashboard.open("#/hosts/host3")
    page.get_by_test_id("action-enter").click()
    dialog = dashboard.dialog("enter")
    dialog.get_by_test_id("reason").fill("kernel")
    dialog.get_by_test_id("policy").fill("max_parallel=0")
    dialog.get_by_test_id("preview").click()
    dialog.get_by_test_id("confirm").click()
    expect(dialog.get_by_test_id("dialog-error")).to_contain_text("Invalid input")
    expect(dialog.get_by_test_id("dialog-error")).to_contain_text("max_parallel")
    dashboard.shot("refused-422")
    dialog.get_by_test_id("cancel").click()
    assert dashboard.site.api("GET", "/v1/hosts/host3")["maintenance"]["state"] == "in_service"

    page.get_by_test_id("action-disable").click()
    dialog = dashboard.dialog("disable")
    dialog.get_by_test_id("reason").fill("flaky NIC")
    dialog.get_by_test_id("reason").press("Enter")
    expect(page.get_by_test_id("admin-state")).to_have_text("disabled")
    expect(page.get_by_test_id("state")).to_contain_text(f"flaky NIC by {OPERATOR}")
    page.get_by_test_id("action-enable").click()
    dashboard.dialog("enable").get_by_test_id("confirm").click()
    expect(page.get_by_test_id("admin-state")).to_have_text("enabled")


def test_overview_follows_changes_live_and_sorts_and_filters(dashboard: Dashboard) -> None:
    page = dashboard.page
    dashboard.sign_in("reader")
    rows = page.get_by_test_id("hosts-table").locator("tbody tr")
    expect(rows).to_have_count(3)
    page.evaluate("window.__notReloaded = true")

    dashboard.site.api("POST", "/v1/hosts/host3/disable", json={"reason": "flaky NIC"})
    admin = dashboard.host_row("host3").locator('[data-col="admin"]')
    expect(admin).to_contain_text("disabled")
    expect(admin).to_contain_text("flaky NIC")
    dashboard.site.api("POST", "/v1/hosts/host2/maintenance/enter", json={"reason": "RAM"})
    maintenance = dashboard.host_row("host2").locator('[data-col="maintenance"]')
    expect(maintenance).to_contain_text("in maintenance")
    expect(maintenance).to_contain_text("RAM")
    assert page.evaluate("window.__notReloaded") is True
    dashboard.shot("live")

    def names() -> list[str]:
        return [rows.nth(i).get_attribute("data-host") or "" for i in range(rows.count())]

    page.get_by_test_id("sort-name").click()
    wait_until(lambda: names() == ["host3", "host2", "host1"], 10, "descending names")
    page.get_by_test_id("sort-instances").click()
    assert names()[-1] == "host1"
    page.get_by_test_id("state-filter").select_option("disabled")
    expect(rows).to_have_count(1)
    expect(dashboard.host_row("host3")).to_be_visible()
    page.get_by_test_id("state-filter").select_option("in_maintenance")
    expect(rows).to_have_count(1)
    expect(dashboard.host_row("host2")).to_be_visible()
    page.get_by_test_id("state-filter").select_option("all")
    page.get_by_test_id("host-filter").fill("flaky")
    expect(rows).to_have_count(1)
    expect(dashboard.host_row("host3")).to_be_visible()
    expect(page.get_by_test_id("hosts-summary")).to_contain_text("1 shown")
    dashboard.shot("filtered")

    # The filter stays while the data changes underneath.
    dashboard.site.api("POST", "/v1/hosts/host3/enable", json={})
    expect(rows).to_have_count(1)
    expect(rows.first).to_contain_text("no host matches the filter")


def test_event_log_filters_and_follows_live(dashboard: Dashboard) -> None:
    page = dashboard.page
    dashboard.sign_in("operator")
    page.get_by_role("link", name="Events").click()
    table = page.get_by_test_id("events-table")
    expect(table.locator("tbody tr").first).to_be_visible()
    expect(table).to_contain_text("host.registered")

    page.get_by_test_id("events-kind").fill("host.maintenance")
    page.get_by_test_id("events-host").fill("host2")
    page.get_by_test_id("events-host").press("Enter")
    expect(page.get_by_test_id("events-status")).to_contain_text("no event matches")

    dashboard.site.api("POST", "/v1/hosts/host2/maintenance/enter", json={"reason": "fans"})
    dashboard.site.api("POST", "/v1/hosts/host3/disable", json={"reason": "elsewhere"})
    first = table.locator("tbody tr").first
    expect(first).to_have_attribute("data-kind", re.compile(r"^host\.maintenance\."))
    expect(table).to_contain_text("fans")
    expect(table).not_to_contain_text("elsewhere")
    kinds = table.locator("tbody tr")
    wait_until(lambda: kinds.count() >= 2, 20, "entered and completed")
    assert all(
        (kinds.nth(i).get_attribute("data-kind") or "").startswith("host.maintenance.")
        for i in range(kinds.count())
    )
    expect(table).to_contain_text("admin")
    dashboard.shot("events")


def test_forced_partial_drain_shows_why_and_a_retry_finishes_it(dashboard: Dashboard) -> None:
    cluster = dashboard.site
    page = dashboard.page
    cluster.api("POST", "/v1/flavors", json={"name": "big", "vcpus": 1, "ram_mb": 1024})
    cluster.api("POST", "/v1/flavors", json={"name": "huge", "vcpus": 1, "ram_mb": 3500})
    placed = {"hog2": ("big", "host2"), "hog3": ("big", "host3"), "huge1": ("huge", "host1")}
    for name, (flavor, host) in placed.items():
        body = {"name": name, "flavor": flavor, "network": "default", "host": host}
        cluster.api("POST", "/v1/instances", json=body)
    dashboard.sign_in("operator")
    dashboard.open_host("host1")
    page.get_by_test_id("action-enter").click()
    dialog = dashboard.dialog("enter")
    dialog.get_by_test_id("reason").fill("disk swap")
    dialog.get_by_test_id("policy").fill("max_attempts=1")
    dialog.get_by_test_id("preview").click()

    expect(dialog.get_by_test_id("verdict")).to_have_text(
        "Pre-check failed: 1 of 4 instance(s) cannot be moved."
    )
    unplaced = dialog.get_by_test_id("unplaced").locator("tbody tr")
    expect(unplaced).to_have_count(1)
    expect(unplaced.first).to_contain_text("huge1")
    expect(unplaced.first).to_contain_text("not enough free RAM")
    confirm = dialog.get_by_test_id("confirm")
    expect(confirm).to_be_disabled()
    dialog.get_by_test_id("force").check()
    expect(confirm).to_be_enabled()
    expect(confirm).to_have_text("Enter maintenance (forced)")
    dashboard.shot("plan-fails")
    confirm.click()

    badge = page.get_by_test_id("maintenance-badge")
    expect(badge).to_have_text("drain failed", timeout=DRAIN_TIMEOUT_MS)
    expect(page.get_by_test_id("drain-error")).to_contain_text(
        "1 instance(s) could not be moved (huge1: "
    )
    expect(page.get_by_test_id("drain-failures")).to_contain_text("huge1")
    expect(page.get_by_test_id("drain-overall")).to_contain_text("3 / 4 moved")
    dashboard.shot("drain-failed")

    cluster.api("DELETE", "/v1/instances/hog2")
    wait_until(
        lambda: "hog2" not in {i["name"] for i in cluster.api("GET", "/v1/instances")},
        30,
        "room on host2",
    )
    page.get_by_test_id("action-retry").click()
    dashboard.dialog("retry").get_by_test_id("confirm").click()
    expect(badge).to_have_text("in maintenance", timeout=DRAIN_TIMEOUT_MS)
    row = page.get_by_test_id("drain-summary").locator('tr[data-instance="huge1"]')
    expect(row.locator("td").nth(1)).to_have_text("host2")
    expect(row.locator("td").nth(3)).to_have_text("2")
    dashboard.shot("retried")


def _disk_bar_mid_way(board: Dashboard, instance: str) -> None:
    """The instance's disk bar shows bytes copied, short of the total, with the copy's pace."""
    board.page.wait_for_function(
        """(instance) => {
             const bar = document.querySelector(`[data-testid="disk-${instance}"]`);
             if (!bar) return false;
             const now = Number(bar.getAttribute('aria-valuenow'));
             const max = Number(bar.getAttribute('aria-valuemax'));
             return max > 0 && now > 0 && now < max && bar.dataset.ready === 'false';
           }""",
        arg=instance,
        timeout=DRAIN_TIMEOUT_MS,
    )


def test_a_local_disk_copy_shows_beside_the_ram_and_in_the_summary(
    dashboard: Dashboard, disks: tuple[str, str]
) -> None:
    disky, plain = disks
    page = dashboard.page
    dashboard.sign_in("operator")
    dashboard.open_host("host2")
    # One move at a time, slow enough (256 MiB of disk at 32 MiB/s) to be seen on the way.
    policy = {"max_outbound": 1, "migration": {"max_bandwidth_mib": 32}}
    body = {"reason": "disk firmware", "policy": policy}
    dashboard.site.api("POST", "/v1/hosts/host2/maintenance/enter", json=body)

    _disk_bar_mid_way(dashboard, disky)
    disk_bar = page.get_by_test_id(f"disk-{disky}")
    expect(disk_bar).to_have_attribute("aria-label", re.compile(r"^disk \d+ MiB / 256 MiB, "))
    expect(page.get_by_test_id(f"progress-{disky}")).to_be_visible()  # the RAM's, beside it
    expect(page.get_by_test_id("drain-disk")).to_contain_text(re.compile(r"disk \d+ MiB / 256 MiB"))
    dashboard.shot("disk-mid-way")
    expect(page.get_by_test_id(f"disk-{disky}")).to_have_attribute(
        "aria-label", re.compile(r", in sync$"), timeout=DRAIN_TIMEOUT_MS
    )
    expect(page.get_by_test_id(f"disk-{plain}")).to_have_count(0)  # RAM only: no disk bar

    expect(page.get_by_test_id("maintenance-badge")).to_have_text(
        "in maintenance", timeout=DRAIN_TIMEOUT_MS
    )
    summary = page.get_by_test_id("drain-summary")
    expect(summary.locator("th").nth(7)).to_have_text("Disk")
    expect(summary.locator(f'tr[data-instance="{disky}"] td').nth(7)).to_have_text(
        "256 MiB / 256 MiB"
    )
    expect(summary.locator(f'tr[data-instance="{plain}"] td').nth(7)).to_have_text("-")
    expect(page.get_by_test_id("drain-ram")).to_have_text("RAM 256 MiB / 256 MiB sent")
    expect(page.get_by_test_id("drain-disk")).to_have_text("disk 256 MiB / 256 MiB copied")
    moves = page.get_by_test_id("migrations")
    expect(moves.locator(f'tr[data-instance="{disky}"]')).to_contain_text(
        "256 MiB / 256 MiB, in sync"
    )
    dashboard.shot("disk-summary")
