// Operator actions on a host: disable/enable, enter maintenance (dry-run plan first, then a
// confirmation), exit maintenance, retry a failed drain. The API decides: a refusal (403, 409,
// 422) is shown with the API's own message.

import { enc, post } from "./api.js";
import { bar, h, memory, percent, table } from "./dom.js";
import { messageOf, notify, openDialog } from "./ui.js";

const PATHS = {
  disable: "disable",
  enable: "enable",
  enter: "maintenance/enter",
  exit: "maintenance/exit",
  retry: "maintenance/retry",
};

const DONE = {
  disable: (host) => `${host} disabled`,
  enable: (host) => `${host} enabled`,
  enter: (host) => `${host} is entering maintenance`,
  exit: (host) => `${host} is back in service`,
  retry: (host) => `the drain of ${host} runs again`,
};

export function request(host, action, body) {
  return post(`/v1/hosts/${enc(host)}/${PATHS[action]}`, body);
}

// One action with its outcome shown as a notice; resolves to the response, or null if refused.
export async function act(host, action, body) {
  try {
    const result = await request(host, action, body);
    notify(DONE[action](host), "success");
    return result;
  } catch (err) {
    notify(messageOf(err), "error");
    return null;
  }
}

function reasonField({ required, placeholder }) {
  const input = h("input", {
    type: "text",
    name: "reason",
    maxlength: 255,
    required,
    placeholder,
    "data-testid": "reason",
    autocomplete: "off",
  });
  const label = h("label", { class: "field" }, required ? "Reason" : "Reason (optional)", input);
  return { input, label };
}

function reasonOf(input, required) {
  const value = input.value.trim();
  if (required && !value) throw new Error("a reason is required");
  return value;
}

function simpleDialog({ host, action, title, intro, required, button, kind, done }) {
  const reason = reasonField({ required, placeholder: required ? "why, for the audit log" : "" });
  const dialog = openDialog({
    title,
    testid: `dialog-${action}`,
    content: h("div", {}, intro && h("p", {}, intro), reason.label),
    buttons: [
      { label: "Cancel", testid: "cancel" },
      {
        label: button,
        kind: kind || "primary",
        testid: "confirm",
        onClick: async () => {
          const text = reasonOf(reason.input, required);
          const body = action === "retry" ? undefined : text ? { reason: text } : {};
          await request(host, action, body);
          notify(DONE[action](host), "success");
          if (done) done();
        },
      },
    ],
  });
  reason.input.focus();
  return dialog;
}

export function askDisable(host, done) {
  return simpleDialog({
    host,
    action: "disable",
    title: `Disable ${host}`,
    intro: "No new instance is placed on a disabled host; those on it keep running.",
    required: true,
    button: "Disable",
    kind: "warn",
    done,
  });
}

export function askEnable(host, done) {
  return simpleDialog({
    host,
    action: "enable",
    title: `Enable ${host}`,
    required: false,
    button: "Enable",
    done,
  });
}

export function askExit(host, state, done) {
  const intro =
    state === "draining"
      ? "The drain is cancelled: queued migrations end, running ones are unwound and their " +
        "instances stay on this host. The host is back in service at once."
      : "The host is back in service: the scheduler may place instances on it again.";
  return simpleDialog({
    host,
    action: "exit",
    title: `Exit maintenance on ${host}`,
    intro,
    required: false,
    button: "Exit maintenance",
    done,
  });
}

export function askRetry(host, done) {
  const dialog = openDialog({
    title: `Retry the drain of ${host}`,
    testid: "dialog-retry",
    content: h(
      "p",
      {},
      "Instances still on the host get fresh attempts; earlier failures no longer count.",
    ),
    buttons: [
      { label: "Cancel", testid: "cancel" },
      {
        label: "Retry drain",
        kind: "primary",
        testid: "confirm",
        onClick: async () => {
          await request(host, "retry");
          notify(DONE.retry(host), "success");
          if (done) done();
        },
      },
    ],
  });
  return dialog;
}

// "migration.max_bandwidth_mib=64 max_outbound=1" -> {migration: {max_bandwidth_mib: 64}, ...}
export function parsePolicy(text) {
  const policy = {};
  for (const item of text.split(/[\s,]+/).filter(Boolean)) {
    const eq = item.indexOf("=");
    if (eq <= 0) throw new Error(`policy: '${item}' is not key=value`);
    const keys = item.slice(0, eq).split(".");
    const raw = item.slice(eq + 1);
    let value;
    try {
      value = JSON.parse(raw);
    } catch {
      value = raw;
    }
    let node = policy;
    for (const key of keys.slice(0, -1)) {
      if (typeof node[key] !== "object" || node[key] === null) node[key] = {};
      node = node[key];
    }
    node[keys[keys.length - 1]] = value;
  }
  return policy;
}

function loadCell(before, after, capacity, format) {
  return h(
    "div",
    { class: "load" },
    bar(before, capacity, `before ${format(before)} / ${format(capacity)}`),
    bar(after, capacity, `after ${format(after)} / ${format(capacity)}`),
  );
}

export function planView(preview) {
  const plan = preview.plan;
  const total = preview.instances.length;
  const verdict = plan.complete
    ? h(
        "p",
        { class: "verdict ok", "data-testid": "verdict" },
        total === 0
          ? `Pre-check passed: ${preview.host} holds no instance; it goes into maintenance at once.`
          : `Pre-check passed: every instance (${total}) has a destination.`,
      )
    : h(
        "p",
        { class: "verdict bad", "data-testid": "verdict" },
        `Pre-check failed: ${plan.unplaced.length} of ${total} instance(s) cannot be moved.`,
      );
  const sizes = new Map(preview.instances.map((i) => [i.name, i]));
  return h(
    "div",
    { class: "plan", "data-testid": "plan" },
    verdict,
    plan.placements.length > 0 &&
      h(
        "section",
        {},
        h("h3", {}, "Where each instance goes"),
        table(
          [
            { title: "Instance", cell: (p) => p.instance },
            { title: "Size", cell: (p) => size(sizes.get(p.instance)) },
            { title: "Destination", cell: (p) => p.destination },
          ],
          plan.placements,
          { testid: "placements" },
        ),
      ),
    plan.unplaced.length > 0 &&
      h(
        "section",
        {},
        h("h3", {}, "Instances no host can take"),
        table(
          [
            { title: "Instance", cell: (p) => p.instance },
            { title: "Why", cell: (p) => p.reason || "-", class: "reason" },
          ],
          plan.unplaced,
          { testid: "unplaced" },
        ),
      ),
    plan.loads.length > 0 &&
      h(
        "section",
        {},
        h("h3", {}, "Destination load before and after"),
        table(
          [
            { title: "Host", cell: (l) => l.host },
            { title: "Arriving", cell: (l) => l.instances },
            {
              title: "RAM",
              cell: (l) => loadCell(l.before.ram_mb, l.after.ram_mb, l.capacity.ram_mb, memory),
            },
            {
              title: "vCPU",
              cell: (l) => loadCell(l.before.vcpus, l.after.vcpus, l.capacity.vcpus, String),
            },
            {
              title: "Busiest resource",
              cell: (l) =>
                `${percent(l.utilization_before)} → ${percent(l.utilization_after)}`,
            },
          ],
          plan.loads,
          { testid: "loads" },
        ),
      ),
    preview.notes.length > 0 &&
      h("ul", { class: "notes" }, preview.notes.map((n) => h("li", {}, n))),
  );
}

function size(instance) {
  if (!instance) return "";
  return `${instance.vcpus} vCPU, ${memory(instance.ram_mb)}`;
}

export function askEnter(host, done) {
  const reason = reasonField({ required: true, placeholder: "why, for the audit log" });
  const policyInput = h("input", {
    type: "text",
    name: "policy",
    placeholder: "e.g. max_outbound=1 migration.max_bandwidth_mib=200",
    "data-testid": "policy",
    autocomplete: "off",
  });
  const form = h(
    "div",
    {},
    h(
      "p",
      {},
      "The host leaves scheduling at once and its instances are live-migrated away. " +
        "First the plan: where each instance would go, checked before anything changes.",
    ),
    reason.label,
    h("label", { class: "field" }, "Drain policy overrides (optional)", policyInput),
  );
  let input = null;
  const dialog = openDialog({
    title: `Enter maintenance on ${host}`,
    testid: "dialog-enter",
    content: form,
    buttons: [],
  });

  const showForm = () => {
    dialog.body.replaceChildren(form);
    dialog.setButtons([
      { label: "Cancel", testid: "cancel" },
      { label: "Preview plan", kind: "primary", testid: "preview", onClick: preview },
    ]);
    reason.input.focus();
  };

  const preview = async () => {
    input = { reason: reasonOf(reason.input, true), policy: parsePolicy(policyInput.value) };
    const result = await request(host, "enter", { ...input, dry_run: true });
    const forceBox = h("input", { type: "checkbox", name: "force", "data-testid": "force" });
    const complete = result.plan.complete;
    dialog.body.replaceChildren(
      h(
        "div",
        {},
        h("p", { class: "summary-line" }, h("strong", {}, "Reason: "), input.reason),
        Object.keys(input.policy).length > 0 &&
          h("p", { class: "summary-line" }, h("strong", {}, "Drain policy: "), h("code", {}, JSON.stringify(input.policy))),
        planView(result),
        !complete &&
          h(
            "label",
            { class: "check" },
            forceBox,
            " Enter anyway: a partial drain. The others move; the drain then fails naming " +
              "those left, and the host stays out of service.",
          ),
      ),
    );
    const confirm = {
      label: complete ? "Enter maintenance" : "Enter maintenance (forced)",
      kind: complete ? "primary" : "danger",
      testid: "confirm",
      disabled: !complete,
      onClick: async () => {
        await request(host, "enter", { ...input, force: !complete && forceBox.checked });
        notify(DONE.enter(host), "success");
        if (done) done();
      },
    };
    const buttons = () => [
      { label: "Back", testid: "back", onClick: () => (showForm(), false) },
      { label: "Cancel", testid: "cancel" },
      { ...confirm, disabled: !complete && !forceBox.checked },
    ];
    dialog.setButtons(buttons());
    forceBox.addEventListener("change", () => dialog.setButtons(buttons()));
    return false;
  };

  showForm();
  return dialog;
}
