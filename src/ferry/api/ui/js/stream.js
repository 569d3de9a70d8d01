// The live event stream (GET /v1/events/stream, Server-Sent Events) read with fetch() so the
// token goes in the Authorization header (EventSource cannot send headers). Reconnects with
// a growing delay and resumes after the last event seen (Last-Event-ID).

import { authHeaders } from "./api.js";

export class EventStream {
  constructor({ onEvent, onStatus, onUnauthenticated }) {
    this.onEvent = onEvent;
    this.onStatus = onStatus;
    this.onUnauthenticated = onUnauthenticated;
    this.lastId = null;
    this.controller = null;
    this.stopped = true;
  }

  start() {
    this.stopped = false;
    this.run();
  }

  stop() {
    this.stopped = true;
    if (this.controller) this.controller.abort();
  }

  async run() {
    let delay = 500;
    while (!this.stopped) {
      this.controller = new AbortController();
      try {
        this.onStatus("connecting");
        const headers = { Accept: "text/event-stream", ...authHeaders() };
        if (this.lastId !== null) headers["Last-Event-ID"] = String(this.lastId);
        const response = await fetch("/v1/events/stream", {
          headers,
          cache: "no-store",
          signal: this.controller.signal,
        });
        if (response.status === 401) {
          this.onStatus("offline");
          this.onUnauthenticated();
          return;
        }
        if (!response.ok || !response.body) throw new Error(`HTTP ${response.status}`);
        delay = 500;
        this.onStatus("live");
        await this.read(response.body);
      } catch (err) {
        if (this.stopped) return;
        console.debug("event stream interrupted:", err);
      }
      if (this.stopped) return;
      this.onStatus("reconnecting");
      await new Promise((resolve) => setTimeout(resolve, delay));
      delay = Math.min(delay * 2, 10000);
    }
  }

  async read(body) {
    const reader = body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    let message = { id: null, event: "message", data: [] };
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += value;
      // A CR at the very end may be the first half of CRLF: wait for the next chunk.
      const complete = buffer.endsWith("\r") ? buffer.length - 1 : buffer.length;
      const lines = buffer.slice(0, complete).replace(/\r\n?/g, "\n").split("\n");
      buffer = lines.pop() + buffer.slice(complete);
      for (const line of lines) {
        if (line === "") {
          this.dispatch(message);
          message = { id: null, event: "message", data: [] };
          continue;
        }
        if (line.startsWith(":")) continue; // keep-alive comment
        const colon = line.indexOf(":");
        const field = colon < 0 ? line : line.slice(0, colon);
        let text = colon < 0 ? "" : line.slice(colon + 1);
        if (text.startsWith(" ")) text = text.slice(1);
        if (field === "data") message.data.push(text);
        else if (field === "event") message.event = text;
        else if (field === "id") message.id = text;
      }
    }
  }

  dispatch(message) {
    if (message.id !== null && /^\d+$/.test(message.id)) this.lastId = Number(message.id);
    if (message.data.length === 0) return;
    let event;
    try {
      event = JSON.parse(message.data.join("\n"));
    } catch {
      return;
    }
    this.onEvent(event);
  }
}
