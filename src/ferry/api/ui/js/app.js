// The dashboard's shell: sign-in, the header (who, role, live status), routing between pages
// (#/hosts, #/hosts/NAME, #/events) and the live event stream that keeps the page current.

import { forgetToken, setUnauthenticatedHandler, storeToken, token, whoami } from "./api.js";
import { h, replaceChildren } from "./dom.js";
import { eventsPage } from "./events.js";
import { hostPage } from "./host.js";
import { hostsPage } from "./hosts.js";
import { EventStream } from "./stream.js";
import { messageOf, notify } from "./ui.js";

const app = document.getElementById("app");
let who = null;
let page = null;
let stream = null;

// Coalesces refreshes: at most one in flight, and one more after it if anything asked meanwhile.
function coalesced(refresh) {
  let running = null;
  let again = false;
  return async function run() {
    if (running) {
      again = true;
      return running;
    }
    running = (async () => {
      do {
        again = false;
        await refresh();
      } while (again);
    })();
    try {
      await running;
    } finally {
      running = null;
    }
  };
}

function signInPage(message) {
  const input = h("input", {
    type: "password",
    name: "token",
    autocomplete: "off",
    required: true,
    placeholder: "ferry_…",
    "aria-label": "API token",
    "data-testid": "token",
  });
  const error = h("p", { class: "error-text", role: "alert", "data-testid": "signin-error" }, message || "");
  const form = h(
    "form",
    { class: "signin", "data-testid": "signin" },
    h("h1", {}, "Ferry"),
    h("p", {}, "Sign in with an API token (", h("code", {}, "ferry token create NAME --role operator"), ")."),
    h("label", { class: "field" }, "Token", input),
    h("button", { type: "submit", class: "primary", "data-testid": "signin-submit" }, "Sign in"),
    error,
  );
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    replaceChildren(error);
    const secret = input.value.trim();
    try {
      const caller = await whoami(secret);
      storeToken(secret);
      start(caller);
    } catch (err) {
      replaceChildren(error, messageOf(err));
    }
  });
  stopStream();
  document.getElementById("header").hidden = true;
  replaceChildren(app, form);
  input.focus();
}

function signOut(message) {
  forgetToken();
  who = null;
  closePage();
  signInPage(message);
}

function stopStream() {
  if (stream) stream.stop();
  stream = null;
}

function setLive(state) {
  const el = document.getElementById("live");
  el.dataset.state = state;
  el.textContent = { live: "live", connecting: "connecting…", reconnecting: "reconnecting…", offline: "offline" }[state] || state;
  if (state === "live" && page) page.refresh();
}

function header() {
  const el = document.getElementById("header");
  el.hidden = false;
  replaceChildren(
    el,
    h("a", { class: "brand", href: "#/hosts" }, "Ferry"),
    h(
      "nav",
      {},
      h("a", { href: "#/hosts", "data-nav": "hosts" }, "Hosts"),
      h("a", { href: "#/events", "data-nav": "events" }, "Events"),
    ),
    h("span", { class: "spacer" }),
    h("span", { id: "live", class: "live", "data-testid": "live", "data-state": "connecting", title: "event stream" }, "connecting…"),
    h("span", { class: "who", "data-testid": "who" }, `${who.name} (${who.role})`),
    h("button", { type: "button", class: "link", "data-testid": "signout", onclick: () => signOut() }, "Sign out"),
  );
}

function closePage() {
  if (page && page.close) page.close();
  page = null;
}

function route() {
  if (!who) return;
  closePage();
  const hash = decodeURIComponent(location.hash.replace(/^#\/?/, ""));
  const [section, ...rest] = hash.split("/");
  let made;
  if (section === "events") made = eventsPage(app);
  else if (section === "hosts" && rest.length > 0 && rest[0]) made = hostPage(app, rest.join("/"), who);
  else made = hostsPage(app);
  page = { ...made, refresh: coalesced(made.refresh) };
  for (const link of document.querySelectorAll("[data-nav]")) {
    link.classList.toggle("active", link.dataset.nav === (section === "events" ? "events" : "hosts"));
  }
}

function onEvent(event) {
  if (!page) return;
  if (page.onEvent) page.onEvent(event);
  if (page.wants(event)) page.refresh();
}

function start(caller) {
  who = { ...caller, canOperate: caller.permissions.includes("operate") };
  header();
  stopStream();
  stream = new EventStream({
    onEvent,
    onStatus: setLive,
    onUnauthenticated: () => signOut("The token is no longer valid; sign in again."),
  });
  stream.start();
  route();
}

setUnauthenticatedHandler(() => signOut("The token is no longer valid; sign in again."));
window.addEventListener("hashchange", route);

async function boot() {
  const secret = token();
  if (!secret) return signInPage();
  try {
    start(await whoami(secret));
  } catch (err) {
    if (err.status === 401) signOut("The token is no longer valid; sign in again.");
    else {
      signInPage(messageOf(err));
      notify(messageOf(err), "error");
    }
  }
}

boot();
