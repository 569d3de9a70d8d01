// Notices (toasts) and modal dialogs.

import { ApiError } from "./api.js";
import { h, replaceChildren } from "./dom.js";

export function messageOf(error) {
  if (error instanceof ApiError) return error.describe();
  return `Error: ${error && error.message ? error.message : String(error)}`;
}

export function notify(text, kind = "info", { timeout = 6000 } = {}) {
  const region = document.getElementById("notices");
  const notice = h(
    "div",
    { class: `notice ${kind}`, role: kind === "error" ? "alert" : "status", "data-testid": "notice" },
    h("span", { class: "notice-text" }, text),
    h("button", { class: "close", type: "button", "aria-label": "dismiss", onclick: () => notice.remove() }, "×"),
  );
  region.append(notice);
  if (timeout && kind !== "error") setTimeout(() => notice.remove(), timeout);
  return notice;
}

export function notifyError(error) {
  return notify(messageOf(error), "error");
}

// A modal dialog. `content` is a node; `buttons` are [{label, kind, onClick, testid}] where
// onClick may return a promise: the dialog shows it running and any error it throws, and
// closes only when it resolves to something other than `false`.
export function openDialog({ title, content, buttons, testid }) {
  const error = h("p", { class: "dialog-error", role: "alert", "data-testid": "dialog-error", hidden: true });
  const footer = h("div", { class: "dialog-buttons" });
  const body = h("div", { class: "dialog-body" }, content);
  const dialog = h(
    "dialog",
    { class: "dialog", "data-testid": testid, "aria-label": title },
    h("h2", {}, title),
    body,
    error,
    footer,
  );
  const handle = {
    dialog,
    body,
    close() {
      dialog.close();
      dialog.remove();
    },
    showError(err) {
      error.hidden = false;
      replaceChildren(error, messageOf(err));
    },
    clearError() {
      error.hidden = true;
      replaceChildren(error);
    },
    setButtons(list) {
      replaceChildren(
        footer,
        list.map((b) => {
          const button = h(
            "button",
            { type: "button", class: b.kind || "", "data-testid": b.testid, disabled: b.disabled },
            b.label,
          );
          button.addEventListener("click", async () => {
            if (!b.onClick) return handle.close();
            handle.clearError();
            const all = footer.querySelectorAll("button");
            all.forEach((x) => (x.disabled = true));
            try {
              const result = await b.onClick(handle, button);
              if (result !== false && dialog.open) handle.close();
            } catch (err) {
              handle.showError(err);
            } finally {
              all.forEach((x) => (x.disabled = x.dataset.locked === "true"));
            }
          });
          if (b.disabled) button.dataset.locked = "true";
          return button;
        }),
      );
    },
  };
  handle.setButtons(buttons);
  // Enter in a text field presses the dialog's main button.
  dialog.addEventListener("keydown", (event) => {
    const target = event.target;
    if (event.key !== "Enter" || target.tagName !== "INPUT" || target.type === "checkbox") return;
    const main = [...footer.querySelectorAll("button.primary, button.warn, button.danger")].pop();
    if (main && !main.disabled) {
      event.preventDefault();
      main.click();
    }
  });
  dialog.addEventListener("close", () => dialog.remove());
  document.body.append(dialog);
  dialog.showModal();
  return handle;
}
