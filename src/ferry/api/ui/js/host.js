// One host: its state and capacity, the actions an operator may take, the live drain view,
// its instances, its migrations and its maintenance history.

import { enc, get, query } from "./api.js";
import { askDisable, askEnable, askEnter, askExit, askRetry } from "./actions.js";
import { drainPanel } from "./drain.js";
import { ago, badge, bar, formatTime, h, memory, mib, replaceChildren, seconds, table } from "./dom.js";
import { messageOf } from "./ui.js";

const POLL_MS = 1000;
const ACTIVE = new Set(["queued", "scheduled", "preparing", "running", "postcopy", "switching"]);

function capacity(host) {
  return h(
    "dl",
    { class: "facts capacity", "data-testid": "capacity" },
    h("dt", {}, "RAM"),
    h("dd", {}, bar(host.used.ram_mb, host.capacity.ram_mb, `${memory(host.used.ram_mb)} / ${memory(host.capacity.ram_mb)}`)),
    h("dt", {}, "vCPU"),
    h("dd", {}, bar(host.used.vcpus, host.capacity.vcpus, `${host.used.vcpus} / ${host.capacity.vcpus}`)),
    h("dt", {}, "Disk"),
    h("dd", {}, bar(host.used.disk_gb, host.capacity.disk_gb, `${host.used.disk_gb} / ${host.capacity.disk_gb} GB`)),
    h("dt", {}, "Instances"),
    h("dd", { "data-testid": "instance-count" }, String(host.instances)),
  );
}

function stateFacts(host) {
  const m = host.maintenance;
  return h(
    "dl",
    { class: "facts" },
    h("dt", {}, "Liveness"),
    h("dd", {}, badge(host.liveness, "liveness"), " ", h("span", { class: "muted" }, host.last_heartbeat_at ? `heartbeat ${ago(host.last_heartbeat_at)}` : "no heartbeat yet")),
    h("dt", {}, "Admin"),
    h(
      "dd",
      {},
      badge(host.admin.state, "admin-state"),
      host.admin.reason && h("span", { class: "reason" }, ` ${host.admin.reason}`),
      host.admin.actor && h("span", { class: "muted" }, ` by ${host.admin.actor} ${ago(host.admin.changed_at)}`),
    ),
    h("dt", {}, "Maintenance"),
    h(
      "dd",
      {},
      badge(m.state, "maintenance-state"),
      m.reason && h("span", { class: "reason" }, ` ${m.reason}`),
      m.actor && h("span", { class: "muted" }, ` by ${m.actor} since ${formatTime(m.since)}`),
      h("span", { class: "muted" }, m.schedulable ? " (schedulable)" : " (not schedulable)"),
    ),
    h("dt", {}, "Addresses"),
    h("dd", {}, `management ${host.management_address}, migration ${host.migration_address}`),
    h("dt", {}, "Storage"),
    h("dd", {}, host.storage.kind === "shared" ? `shared pool ${host.storage.pool}, ${host.storage.free_gb} GiB free` : `local, ${host.storage.free_gb} GiB free`),
    h("dt", {}, "Platform"),
    h("dd", {}, `${host.capabilities.cpu_model}, ${host.capabilities.machine_type}, QEMU ${host.capabilities.qemu_version} (${host.capabilities.accelerator.toUpperCase()}), agent ${host.agent_version}`),
  );
}

function actionBar(host, who, refresh) {
  if (!who.canOperate) {
    return h(
      "p",
      { class: "readonly muted", "data-testid": "read-only" },
      `Read only: the token '${who.name}' has role '${who.role}', which may not change hosts.`,
    );
  }
  const button = (label, testid, onclick, kind = "") =>
    h("button", { type: "button", class: kind, "data-testid": testid, onclick }, label);
  const name = host.name;
  const state = host.maintenance.state;
  return h(
    "div",
    { class: "actions", "data-testid": "actions" },
    host.admin.state === "enabled"
      ? button("Disable…", "action-disable", () => askDisable(name, refresh))
      : button("Enable…", "action-enable", () => askEnable(name, refresh)),
    state === "in_service" && button("Enter maintenance…", "action-enter", () => askEnter(name, refresh), "primary"),
    state === "drain_failed" && button("Retry drain…", "action-retry", () => askRetry(name, refresh), "primary"),
    state !== "in_service" && button("Exit maintenance…", "action-exit", () => askExit(name, state, refresh)),
  );
}

function instancesTable(instances) {
  return table(
    [
      { title: "Instance", cell: (i) => i.name },
      { title: "State", cell: (i) => badge(i.state) },
      { title: "Flavor", cell: (i) => i.flavor },
      { title: "vCPU", cell: (i) => String(i.vcpus), class: "num" },
      { title: "RAM", cell: (i) => memory(i.ram_mb), class: "num" },
      { title: "Addresses", cell: (i) => i.ports.map((p) => `${p.ip} (${p.network})`).join(", ") },
      { title: "Group", cell: (i) => i.server_group || "" },
      { title: "Error", cell: (i) => i.error || "", class: "reason" },
    ],
    instances,
    { testid: "instances", empty: "no instance on this host", rowAttrs: (i) => ({ "data-instance": i.name }) },
  );
}

// A local disk copied with its instance: copied of total, "in sync" once the RAM may move.
function diskCell(m) {
  if (!m.disk) return "-";
  return `${mib(m.disk.copied_bytes)} / ${mib(m.disk.total_bytes)}` + (m.disk.ready ? ", in sync" : "");
}

function migrationsTable(migrations) {
  return table(
    [
      { title: "Instance", cell: (m) => m.instance },
      { title: "From → to", cell: (m) => `${m.source} → ${m.destination || "?"}` },
      { title: "Kind", cell: (m) => m.kind },
      { title: "State", cell: (m) => badge(m.state) },
      { title: "Try", cell: (m) => String(m.attempt), class: "num" },
      { title: "Sent", cell: (m) => (m.bytes_total ? `${mib(m.bytes_sent || 0)} / ${mib(m.bytes_total)}` : "-"), class: "num" },
      { title: "Disk", cell: diskCell, class: "num" },
      { title: "Downtime", cell: (m) => (m.downtime_ms === null ? "-" : `${m.downtime_ms} ms`), class: "num" },
      { title: "Started", cell: (m) => formatTime(m.started_at || m.created_at) },
      { title: "Time", cell: (m) => seconds(m.started_at, m.finished_at), class: "num" },
      { title: "By", cell: (m) => m.actor },
      { title: "Error", cell: (m) => m.error || "", class: "reason" },
    ],
    migrations,
    { testid: "migrations", empty: "no migration from or to this host", rowAttrs: (m) => ({ "data-instance": m.instance }) },
  );
}

function historyTable(events) {
  return table(
    [
      { title: "When", cell: (e) => formatTime(e.at) },
      { title: "What", cell: (e) => e.kind.replace(/^host\.maintenance\./, "") },
      { title: "Who", cell: (e) => e.actor },
      { title: "Why", cell: (e) => (e.data && e.data.reason) || "", class: "reason" },
      { title: "Message", cell: (e) => e.message, class: "reason" },
    ],
    events,
    { testid: "history", empty: "never in maintenance" },
  );
}

function section(title, testid, ...content) {
  return h("section", { class: "card", "data-testid": testid }, h("h2", {}, title), ...content);
}

export function hostPage(root, name, who) {
  let poll = null;
  let closed = false;
  const content = h("div", { class: "host-content" }, h("p", { class: "muted" }, "loading…"));
  replaceChildren(
    root,
    h(
      "section",
      { class: "page" },
      h("nav", { class: "crumbs" }, h("a", { href: "#/hosts" }, "Hosts"), " / ", h("span", {}, name)),
      content,
    ),
  );

  // A slow answer never overwrites a newer one already shown.
  let asked = 0;
  let shown = 0;

  async function refresh() {
    const mine = ++asked;
    let data;
    try {
      const path = `/v1/hosts/${enc(name)}`;
      const [host, status, instances, migrations, history] = await Promise.all([
        get(path),
        get(`${path}/maintenance`),
        get(`/v1/instances${query({ host: name })}`),
        get(`/v1/migrations${query({ host: name, limit: 100 })}`),
        get(`/v1/events${query({ kind: "host.maintenance", host: name, limit: 50 })}`),
      ]);
      data = { host, status, instances, migrations, history: history.items };
    } catch (err) {
      if (closed || mine < shown) return;
      shown = mine;
      replaceChildren(content, h("p", { class: "error-text", role: "alert" }, messageOf(err)));
      return;
    }
    if (closed || mine < shown) return;
    shown = mine;
    render(data);
    schedulePoll(data);
  }

  // Migration progress is stored without an event: while a drain or a migration of this host
  // runs, read it again every second.
  function schedulePoll({ status, migrations }) {
    clearTimeout(poll);
    const running =
      status.maintenance.state === "draining" ||
      (status.drain && status.drain.state === "running") ||
      migrations.some((m) => ACTIVE.has(m.state));
    if (running) poll = setTimeout(refresh, POLL_MS);
  }

  function render({ host, status, instances, migrations, history }) {
    replaceChildren(
      content,
      h(
        "div",
        { class: "page-head" },
        h("h1", { "data-testid": "host-name" }, host.name),
        h("div", { class: "badges" }, badge(host.liveness), badge(host.admin.state), badge(host.maintenance.state, "maintenance-badge")),
      ),
      actionBar(host, who, refresh),
      h("div", { class: "cards" }, section("State", "state", stateFacts(host)), section("Capacity", "capacity-card", capacity(host))),
      section("Drain", "drain-card", drainPanel(status)),
      section(`Instances (${instances.length})`, "instances-card", instancesTable(instances)),
      section("Migrations", "migrations-card", migrationsTable(migrations)),
      section("Maintenance history", "history-card", historyTable(history)),
    );
  }

  refresh();
  return {
    refresh,
    wants: (event) => event.host === name || /^(migration|drain|instance)\./.test(event.kind),
    close() {
      closed = true;
      clearTimeout(poll);
    },
  };
}
