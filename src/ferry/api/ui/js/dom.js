// Building DOM nodes and formatting values. Text always goes in through text nodes, never as
// HTML, so names and reasons from the API cannot inject markup.

export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") el.className = value;
    else if (key === "dataset") Object.assign(el.dataset, value);
    else if (key === "style") Object.assign(el.style, value);
    else if (key.startsWith("on") && typeof value === "function") {
      el.addEventListener(key.slice(2), value);
    } else if (value === true) el.setAttribute(key, "");
    else el.setAttribute(key, String(value));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children) {
    if (child === undefined || child === null || child === false) continue;
    if (Array.isArray(child)) append(el, child);
    else if (child instanceof Node) el.append(child);
    else el.append(document.createTextNode(String(child)));
  }
}

export function clear(el) {
  while (el.firstChild) el.firstChild.remove();
  return el;
}

export function replaceChildren(el, ...children) {
  clear(el);
  append(el, children);
  return el;
}

const MIB = 2 ** 20;

export function parseTime(text) {
  if (!text) return null;
  // Every time the API returns is UTC; one without a zone is read as UTC too.
  const zoned = /[zZ]|[+-]\d\d:?\d\d$/.test(text) ? text : `${text}Z`;
  const date = new Date(zoned);
  return Number.isNaN(date.getTime()) ? null : date;
}

export function formatTime(text) {
  const date = parseTime(text);
  if (!date) return "-";
  const pad = (n) => String(n).padStart(2, "0");
  return (
    `${date.getFullYear()}-${pad(date.getMonth() + 1)}-${pad(date.getDate())} ` +
    `${pad(date.getHours())}:${pad(date.getMinutes())}:${pad(date.getSeconds())}`
  );
}

export function ago(text) {
  const date = parseTime(text);
  if (!date) return "";
  const seconds = Math.max(0, Math.round((Date.now() - date.getTime()) / 1000));
  if (seconds < 60) return `${seconds}s ago`;
  if (seconds < 3600) return `${Math.floor(seconds / 60)}m ago`;
  if (seconds < 86400) return `${Math.floor(seconds / 3600)}h ago`;
  return `${Math.floor(seconds / 86400)}d ago`;
}

export function seconds(start, end) {
  const a = parseTime(start);
  const b = parseTime(end);
  if (!a || !b) return "-";
  return `${((b.getTime() - a.getTime()) / 1000).toFixed(1)} s`;
}

export function mib(bytes) {
  if (bytes === null || bytes === undefined) return "-";
  return `${Math.round(bytes / MIB)} MiB`;
}

export function memory(mb) {
  if (mb >= 10240) return `${(mb / 1024).toFixed(0)} GiB`;
  if (mb >= 1024) return `${(mb / 1024).toFixed(1)} GiB`;
  return `${mb} MiB`;
}

export function percent(fraction) {
  return `${Math.round(fraction * 100)}%`;
}

export function fraction(part, whole) {
  if (!whole) return part > 0 ? 1 : 0;
  return part / whole;
}

// A horizontal bar: `value` of `total`, with a label. A usage bar turns amber then red as it
// fills; a progress bar (`progress: true`) turns green when done.
export function bar(value, total, label, { testid, progress = false } = {}) {
  const share = Math.max(0, Math.min(1, fraction(value, total)));
  const level = progress
    ? share >= 1
      ? "done"
      : "moving"
    : share >= 0.95
      ? "full"
      : share >= 0.8
        ? "high"
        : "ok";
  const fill = h("div", { class: `bar-fill ${level}` });
  fill.style.width = `${(share * 100).toFixed(1)}%`;
  return h(
    "div",
    {
      class: "bar",
      role: "progressbar",
      "aria-valuemin": 0,
      "aria-valuemax": total || 0,
      "aria-valuenow": value || 0,
      "aria-label": label,
      "data-testid": testid,
    },
    fill,
    h("span", { class: "bar-label" }, label),
  );
}

const STATE_CLASS = {
  up: "good",
  enabled: "good",
  in_service: "good",
  completed: "good",
  running: "info",
  draining: "info",
  queued: "muted",
  scheduled: "info",
  preparing: "info",
  postcopy: "info",
  switching: "info",
  in_maintenance: "warn",
  disabled: "warn",
  cancelled: "muted",
  stopped: "muted",
  building: "info",
  down: "bad",
  drain_failed: "bad",
  failed: "bad",
  error: "bad",
};

export function badge(state, testid) {
  const text = String(state ?? "-");
  return h(
    "span",
    { class: `badge ${STATE_CLASS[text] || "muted"}`, "data-testid": testid },
    text.replaceAll("_", " "),
  );
}

export function table(columns, rows, { empty = "nothing to show", testid, rowAttrs } = {}) {
  const head = h("thead", {}, h("tr", {}, columns.map((c) => h("th", { scope: "col" }, c.title))));
  const body = h(
    "tbody",
    {},
    rows.length === 0
      ? h("tr", {}, h("td", { colspan: columns.length, class: "empty" }, empty))
      : rows.map((row) =>
          h(
            "tr",
            rowAttrs ? rowAttrs(row) : {},
            columns.map((c) => h("td", { class: c.class }, c.cell(row))),
          ),
        ),
  );
  return h("table", { class: "grid", "data-testid": testid }, head, body);
}
