// The hosts overview: one row per host, sortable by any column, filtered by text and state,
// re-read whenever the event stream says something changed.

import { get } from "./api.js";
import { badge, bar, fraction, h, memory, replaceChildren } from "./dom.js";
import { messageOf } from "./ui.js";

const STATE_FILTERS = [
  ["all", "All states"],
  ["in_service", "In service"],
  ["draining", "Draining"],
  ["in_maintenance", "In maintenance"],
  ["drain_failed", "Drain failed"],
  ["out", "Out of service (any maintenance)"],
  ["disabled", "Disabled"],
  ["down", "Down"],
];

const MAINTENANCE_ORDER = ["drain_failed", "draining", "in_maintenance", "in_service"];

const COLUMNS = [
  { key: "name", title: "Host", value: (x) => x.name },
  { key: "liveness", title: "Liveness", value: (x) => x.liveness },
  { key: "admin", title: "Admin", value: (x) => x.admin.state },
  {
    key: "maintenance",
    title: "Maintenance",
    value: (x) => MAINTENANCE_ORDER.indexOf(x.maintenance.state),
  },
  { key: "ram", title: "RAM", value: (x) => fraction(x.used.ram_mb, x.capacity.ram_mb) },
  { key: "vcpu", title: "vCPU", value: (x) => fraction(x.used.vcpus, x.capacity.vcpus) },
  { key: "instances", title: "Instances", value: (x) => x.instances },
];

// Kept across visits to the page, like a spreadsheet's view settings.
const view = { sort: "name", descending: false, text: "", state: "all" };

function matchesState(host, state) {
  switch (state) {
    case "all":
      return true;
    case "out":
      return host.maintenance.state !== "in_service";
    case "disabled":
      return host.admin.state === "disabled";
    case "down":
      return host.liveness === "down";
    default:
      return host.maintenance.state === state;
  }
}

function matchesText(host, text) {
  if (!text) return true;
  const haystack = [
    host.name,
    host.liveness,
    host.admin.state,
    host.admin.reason,
    host.maintenance.state,
    host.maintenance.reason,
    host.maintenance.actor,
  ]
    .filter(Boolean)
    .join(" ")
    .toLowerCase();
  return text
    .toLowerCase()
    .split(/\s+/)
    .every((word) => haystack.includes(word));
}

function compare(a, b) {
  const column = COLUMNS.find((c) => c.key === view.sort) || COLUMNS[0];
  const x = column.value(a);
  const y = column.value(b);
  let order = typeof x === "number" && typeof y === "number" ? x - y : String(x).localeCompare(String(y));
  if (order === 0) order = a.name.localeCompare(b.name);
  return view.descending ? -order : order;
}

function withReason(state, reason, actor) {
  return h(
    "div",
    { class: "state-cell" },
    badge(state),
    reason && h("span", { class: "reason", title: actor ? `by ${actor}` : undefined }, reason),
  );
}

function row(host) {
  return h(
    "tr",
    { "data-host": host.name, "data-testid": `host-row-${host.name}` },
    h("td", {}, h("a", { href: `#/hosts/${encodeURIComponent(host.name)}`, class: "host-link" }, host.name)),
    h("td", { "data-col": "liveness" }, badge(host.liveness)),
    h("td", { "data-col": "admin" }, withReason(host.admin.state, host.admin.reason, host.admin.actor)),
    h(
      "td",
      { "data-col": "maintenance" },
      withReason(host.maintenance.state, host.maintenance.reason, host.maintenance.actor),
    ),
    h(
      "td",
      { "data-col": "ram" },
      bar(host.used.ram_mb, host.capacity.ram_mb, `${memory(host.used.ram_mb)} / ${memory(host.capacity.ram_mb)}`),
    ),
    h(
      "td",
      { "data-col": "vcpu" },
      bar(host.used.vcpus, host.capacity.vcpus, `${host.used.vcpus} / ${host.capacity.vcpus}`),
    ),
    h("td", { "data-col": "instances", class: "num" }, String(host.instances)),
  );
}

export function hostsPage(root) {
  let hosts = null;
  let error = null;
  const summary = h("p", { class: "summary", "data-testid": "hosts-summary" });
  const textInput = h("input", {
    type: "search",
    placeholder: "Filter: name, state, reason…",
    value: view.text,
    "aria-label": "filter hosts",
    "data-testid": "host-filter",
  });
  const stateSelect = h(
    "select",
    { "aria-label": "state filter", "data-testid": "state-filter" },
    STATE_FILTERS.map(([value, label]) => h("option", { value, selected: value === view.state }, label)),
  );
  const headRow = h("tr");
  const body = h("tbody");
  const tableEl = h("table", { class: "grid hosts", "data-testid": "hosts-table" }, h("thead", {}, headRow), body);

  textInput.addEventListener("input", () => {
    view.text = textInput.value.trim();
    draw();
  });
  stateSelect.addEventListener("change", () => {
    view.state = stateSelect.value;
    draw();
  });

  function header() {
    replaceChildren(
      headRow,
      COLUMNS.map((column) => {
        const active = view.sort === column.key;
        const th = h(
          "th",
          {
            scope: "col",
            class: "sortable",
            "aria-sort": active ? (view.descending ? "descending" : "ascending") : "none",
            "data-sort": column.key,
          },
          h(
            "button",
            { type: "button", class: "sort", "data-testid": `sort-${column.key}` },
            column.title,
            h("span", { class: "arrow", "aria-hidden": "true" }, active ? (view.descending ? " ▼" : " ▲") : ""),
          ),
        );
        th.querySelector("button").addEventListener("click", () => {
          if (view.sort === column.key) view.descending = !view.descending;
          else {
            view.sort = column.key;
            view.descending = false;
          }
          draw();
        });
        return th;
      }),
    );
  }

  function draw() {
    header();
    if (error && !hosts) {
      replaceChildren(body, h("tr", {}, h("td", { colspan: COLUMNS.length, class: "empty error" }, error)));
      return;
    }
    if (!hosts) {
      replaceChildren(body, h("tr", {}, h("td", { colspan: COLUMNS.length, class: "empty" }, "loading…")));
      return;
    }
    const shown = hosts
      .filter((x) => matchesState(x, view.state) && matchesText(x, view.text))
      .sort(compare);
    replaceChildren(
      body,
      shown.length
        ? shown.map(row)
        : h("tr", {}, h("td", { colspan: COLUMNS.length, class: "empty" }, hosts.length ? "no host matches the filter" : "no host has registered yet")),
    );
    const count = (test) => hosts.filter(test).length;
    replaceChildren(
      summary,
      `${hosts.length} host(s): ${count((x) => x.liveness === "up")} up, ` +
        `${count((x) => x.admin.state === "disabled")} disabled, ` +
        `${count((x) => x.maintenance.state !== "in_service")} out of service` +
        (shown.length !== hosts.length ? `; ${shown.length} shown` : ""),
    );
  }

  let asked = 0;
  let shown = 0;

  async function refresh() {
    const mine = ++asked;
    let answer;
    let failure = null;
    try {
      answer = await get("/v1/hosts");
    } catch (err) {
      failure = messageOf(err);
    }
    if (mine < shown) return; // a newer answer is on the page already
    shown = mine;
    if (failure === null) hosts = answer;
    error = failure;
    draw();
  }

  replaceChildren(
    root,
    h(
      "section",
      { class: "page" },
      h("div", { class: "page-head" }, h("h1", {}, "Hosts"), summary),
      h("div", { class: "toolbar" }, textInput, stateSelect),
      tableEl,
    ),
  );
  draw();
  refresh();

  return {
    refresh,
    // Anything about hosts, drains, migrations or instances can change a row.
    wants: (event) => /^(host|drain|migration|instance)\./.test(event.kind),
  };
}
