// API v1 calls with the signed-in token. The token lives in sessionStorage only (gone when the
// tab closes) and travels in the Authorization header, never in a URL.

const TOKEN_KEY = "ferry.token";

export class ApiError extends Error {
  constructor(status, code, message, details) {
    super(message);
    this.status = status;
    this.code = code;
    this.details = details;
  }

  // What the operator reads: the API's own message, with what kind of refusal it was.
  describe() {
    const kind =
      {
        400: "Bad request",
        401: "Not signed in",
        403: "Not allowed",
        404: "Not found",
        409: "Refused",
        422: "Invalid input",
      }[this.status] || `Error ${this.status || ""}`.trim();
    return `${kind}: ${this.message}`;
  }
}

let onUnauthenticated = () => {};

export function setUnauthenticatedHandler(handler) {
  onUnauthenticated = handler;
}

export function token() {
  return sessionStorage.getItem(TOKEN_KEY);
}

export function storeToken(secret) {
  sessionStorage.setItem(TOKEN_KEY, secret);
}

export function forgetToken() {
  sessionStorage.removeItem(TOKEN_KEY);
}

export function authHeaders(secret = token()) {
  return secret ? { Authorization: `Bearer ${secret}` } : {};
}

async function errorOf(response) {
  let body = null;
  try {
    body = await response.json();
  } catch {
    // not JSON: a proxy or the network said something
  }
  if (body && typeof body.message === "string") {
    return new ApiError(response.status, body.error, body.message, body.details);
  }
  return new ApiError(response.status, "http_error", response.statusText || "request failed");
}

export async function call(method, path, body, { secret } = {}) {
  const headers = { Accept: "application/json", ...authHeaders(secret ?? token()) };
  const init = { method, headers, cache: "no-store" };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch (err) {
    throw new ApiError(0, "network", `the controller cannot be reached (${err.message})`);
  }
  if (!response.ok) {
    const error = await errorOf(response);
    if (response.status === 401 && secret === undefined) onUnauthenticated(error);
    throw error;
  }
  if (response.status === 204) return null;
  return response.json();
}

export const get = (path) => call("GET", path);
export const post = (path, body) => call("POST", path, body);

export function query(params) {
  const search = new URLSearchParams();
  for (const [key, value] of Object.entries(params)) {
    if (value === undefined || value === null || value === "") continue;
    search.append(key, String(value));
  }
  const text = search.toString();
  return text ? `?${text}` : "";
}

export const enc = encodeURIComponent;

// The caller, checked against the controller: {name, role}.
export function whoami(secret) {
  return call("GET", "/v1/whoami", undefined, { secret });
}
