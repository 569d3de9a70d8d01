// The event (audit) log: newest first, filtered by kind prefix, host and actor, with older
// pages on demand; new matching events appear at the top as they happen.

import { get, query } from "./api.js";
import { formatTime, h, replaceChildren } from "./dom.js";
import { messageOf } from "./ui.js";

const PAGE = 100;
const filters = { kind: "", host: "", actor: "" };

function matches(event) {
  const kind = filters.kind;
  if (kind && event.kind !== kind && !event.kind.startsWith(`${kind}.`)) return false;
  if (filters.host && event.host !== filters.host) return false;
  if (filters.actor && event.actor !== filters.actor) return false;
  return true;
}

function row(event) {
  return h(
    "tr",
    { "data-event-id": String(event.id), "data-kind": event.kind },
    h("td", { class: "num" }, String(event.id)),
    h("td", {}, formatTime(event.at)),
    h("td", {}, h("code", {}, event.kind)),
    h("td", {}, event.actor),
    h("td", {}, event.host ? h("a", { href: `#/hosts/${encodeURIComponent(event.host)}` }, event.host) : ""),
    h("td", { class: "reason" }, event.message),
  );
}

export function eventsPage(root) {
  let cursor = null;
  const input = (key, placeholder, label) => {
    const el = h("input", {
      type: "search",
      placeholder,
      value: filters[key],
      "aria-label": label,
      "data-testid": `events-${key}`,
      autocomplete: "off",
    });
    el.addEventListener("change", () => {
      filters[key] = el.value.trim();
      load();
    });
    return el;
  };
  const body = h("tbody");
  const status = h("p", { class: "muted", "data-testid": "events-status" });
  const more = h("button", { type: "button", "data-testid": "events-more", hidden: true }, "Older events");
  more.addEventListener("click", () => load(cursor));
  const form = h(
    "form",
    { class: "toolbar", "data-testid": "events-filters" },
    input("kind", "kind or prefix, e.g. host.maintenance", "kind prefix"),
    input("host", "host", "host"),
    input("actor", "actor (token name)", "actor"),
    h("button", { type: "submit" }, "Apply"),
  );
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    for (const el of form.querySelectorAll("input")) filters[el.dataset.testid.replace("events-", "")] = el.value.trim();
    load();
  });

  replaceChildren(
    root,
    h(
      "section",
      { class: "page" },
      h("div", { class: "page-head" }, h("h1", {}, "Events")),
      form,
      h(
        "table",
        { class: "grid events", "data-testid": "events-table" },
        h(
          "thead",
          {},
          h("tr", {}, ["#", "When", "Kind", "Actor", "Host", "Message"].map((t) => h("th", { scope: "col" }, t))),
        ),
        body,
      ),
      status,
      more,
    ),
  );

  // Each new filter starts a new generation; answers to an older one are dropped.
  let generation = 0;

  async function load(before = null) {
    if (before === null) generation += 1;
    const mine = generation;
    try {
      const page = await get(
        `/v1/events${query({ kind: filters.kind, host: filters.host, actor: filters.actor, limit: PAGE, before })}`,
      );
      if (mine !== generation) return;
      if (before === null) replaceChildren(body);
      body.append(...page.items.filter((e) => !body.querySelector(`tr[data-event-id="${e.id}"]`)).map(row));
      cursor = page.next_cursor;
      more.hidden = cursor === null;
      const count = body.querySelectorAll("tr").length;
      replaceChildren(status, count ? `${count} event(s) shown` : "no event matches");
    } catch (err) {
      if (mine !== generation) return;
      replaceChildren(status, h("span", { class: "error-text", role: "alert" }, messageOf(err)));
    }
  }

  load();
  return {
    // A reconnected stream may have missed some: read the first page again.
    refresh: () => load(),
    wants: () => false,
    onEvent(event) {
      if (!matches(event) || body.querySelector(`tr[data-event-id="${event.id}"]`)) return;
      body.prepend(row(event));
      replaceChildren(status, `${body.querySelectorAll("tr").length} event(s) shown`);
    },
  };
}
