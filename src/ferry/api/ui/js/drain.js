// A drain as an operator follows it: overall progress with the RAM and disk bytes moved, one bar
// per migration while it runs (and a disk bar beside it when its local disk is copied),
// failures with their reasons, then a summary (where each instance went, downtime, time).

import { badge, bar, formatTime, h, mib, seconds, table } from "./dom.js";

const ACTIVE = new Set(["queued", "scheduled", "preparing", "running", "postcopy", "switching"]);

// Each instance's latest attempt (the API lists attempts in order), and how many it took.
function latest(migrations) {
  const last = new Map();
  const tries = new Map();
  for (const m of migrations) {
    last.set(m.instance, m);
    tries.set(m.instance, (tries.get(m.instance) || 0) + 1);
  }
  return { last: [...last.values()], tries };
}

function throughput(m) {
  return m.throughput_mbps ? `${Math.round(m.throughput_mbps)} Mbit/s` : "-";
}

// A local disk's copy: copied of total, then its throughput or "in sync" (the RAM moves next).
export function diskLabel(disk) {
  const pace = disk.ready ? "in sync" : disk.throughput_mbps ? `${Math.round(disk.throughput_mbps)} Mbit/s` : "copying";
  return `disk ${mib(disk.copied_bytes)} / ${mib(disk.total_bytes)}, ${pace}`;
}

export function diskBar(m) {
  const el = bar(m.disk.copied_bytes, m.disk.total_bytes, diskLabel(m.disk), {
    testid: `disk-${m.instance}`,
    progress: true,
  });
  el.dataset.ready = String(m.disk.ready);
  return el;
}

function ramBar(m) {
  const options = { testid: `progress-${m.instance}`, progress: true };
  const ram = m.disk ? "RAM " : "";
  if (!m.bytes_total) {
    const waiting = m.disk && !m.disk.ready ? "RAM waits for the disk" : "waiting";
    return bar(0, 1, m.state === "completed" ? "done" : waiting, options);
  }
  return bar(m.bytes_sent || 0, m.bytes_total, `${ram}${mib(m.bytes_sent || 0)} / ${mib(m.bytes_total)}`, options);
}

function progress(m) {
  if (m.kind === "cold") return h("span", { class: "muted" }, "cold move (not running)");
  if (!m.disk) return ramBar(m);
  return h("div", { class: "load" }, ramBar(m), diskBar(m));
}

// What the migrations move, RAM and disk apart: bytes sent (copied) of their totals.
export function totals(migrations) {
  const sum = { ramSent: 0, ramTotal: 0, diskCopied: 0, diskTotal: 0, disks: 0 };
  for (const m of migrations) {
    sum.ramSent += m.bytes_sent || 0;
    sum.ramTotal += m.bytes_total || 0;
    if (!m.disk) continue;
    sum.disks += 1;
    sum.diskCopied += m.disk.copied_bytes;
    sum.diskTotal += m.disk.total_bytes;
  }
  return sum;
}

function bytesMoved(status) {
  const sum = totals(latest(status.migrations).last);
  return h(
    "span",
    { class: "muted", "data-testid": "drain-bytes" },
    h("span", { "data-testid": "drain-ram" }, `RAM ${mib(sum.ramSent)} / ${mib(sum.ramTotal)} sent`),
    sum.disks > 0 && ", ",
    sum.disks > 0 &&
      h("span", { "data-testid": "drain-disk" }, `disk ${mib(sum.diskCopied)} / ${mib(sum.diskTotal)} copied`),
  );
}

function liveTable(status) {
  const { last } = latest(status.migrations);
  return table(
    [
      { title: "Instance", cell: (m) => m.instance },
      { title: "To", cell: (m) => m.destination || "-" },
      { title: "State", cell: (m) => badge(m.state) },
      { title: "Try", cell: (m) => String(m.attempt), class: "num" },
      { title: "Progress", cell: progress, class: "progress-cell" },
      { title: "Throughput", cell: throughput, class: "num" },
      { title: "Remaining", cell: (m) => (m.bytes_remaining === null ? "-" : mib(m.bytes_remaining)), class: "num" },
      { title: "Passes", cell: (m) => (m.passes === null ? "-" : String(m.passes)), class: "num" },
      { title: "Error", cell: (m) => m.error || "", class: "reason" },
    ],
    last,
    { testid: "drain-migrations", empty: "no migration yet", rowAttrs: (m) => ({ "data-instance": m.instance }) },
  );
}

function summaryTable(status) {
  const { last, tries } = latest(status.migrations);
  return table(
    [
      { title: "Instance", cell: (m) => m.instance },
      { title: "Went to", cell: (m) => (m.state === "completed" ? m.destination || "-" : "stayed") },
      { title: "State", cell: (m) => badge(m.state) },
      { title: "Tries", cell: (m) => String(tries.get(m.instance)), class: "num" },
      { title: "Downtime", cell: (m) => (m.downtime_ms === null ? "-" : `${m.downtime_ms} ms`), class: "num" },
      { title: "Time", cell: (m) => seconds(m.started_at, m.finished_at), class: "num" },
      { title: "Sent", cell: (m) => mib(m.bytes_sent || 0), class: "num" },
      { title: "Disk", cell: (m) => (m.disk ? `${mib(m.disk.copied_bytes)} / ${mib(m.disk.total_bytes)}` : "-"), class: "num" },
      { title: "Error", cell: (m) => m.error || "", class: "reason" },
    ],
    last,
    { testid: "drain-summary", empty: "nothing had to move", rowAttrs: (m) => ({ "data-instance": m.instance }) },
  );
}

function failures(status) {
  const failed = status.migrations.filter((m) => m.state === "failed" && m.error);
  if (failed.length === 0) return null;
  return h(
    "div",
    { class: "failures", "data-testid": "drain-failures" },
    h("h3", {}, "Failed attempts"),
    h(
      "ul",
      {},
      failed.map((m) =>
        h("li", {}, h("strong", {}, `${m.instance}`), ` (try ${m.attempt}${m.destination ? ` to ${m.destination}` : ""}): ${m.error}`),
      ),
    ),
  );
}

function overall(status) {
  const drain = status.drain;
  const done = drain.instances_moved;
  const total = drain.instances_total;
  const inFlight = status.migrations.filter((m) => ACTIVE.has(m.state)).length;
  return h(
    "div",
    { class: "overall" },
    bar(total ? done : Number(drain.state === "completed"), total || 1, `${done} / ${total} moved`, {
      testid: "drain-overall",
      progress: true,
    }),
    h(
      "span",
      { class: "muted" },
      `${status.instances_remaining} left on the host` +
        (drain.instances_failed ? `, ${drain.instances_failed} could not move` : "") +
        (drain.state === "running" ? `, ${inFlight} in flight` : ""),
    ),
    bytesMoved(status),
  );
}

export function drainPanel(status) {
  const drain = status.drain;
  if (!drain) {
    return h("p", { class: "muted", "data-testid": "drain" }, "This host has never been drained.");
  }
  const running = drain.state === "running";
  return h(
    "div",
    { class: `drain ${drain.state}`, "data-testid": "drain", "data-state": drain.state },
    h(
      "div",
      { class: "drain-head" },
      badge(drain.state, "drain-state"),
      h("span", {}, ` ${drain.reason}`),
      h(
        "span",
        { class: "muted" },
        ` by ${drain.actor}, started ${formatTime(drain.created_at)}` +
          (drain.finished_at
            ? `, ended ${formatTime(drain.finished_at)} (${seconds(drain.created_at, drain.finished_at)})`
            : "") +
          (drain.force ? " (forced past the pre-check)" : ""),
      ),
    ),
    overall(status),
    drain.error && h("p", { class: "error-text", "data-testid": "drain-error" }, drain.error),
    running ? liveTable(status) : h("div", {}, h("h3", {}, "Summary"), summaryTable(status)),
    failures(status),
  );
}
