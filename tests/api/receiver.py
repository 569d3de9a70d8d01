"""A real HTTP receiver for webhook deliveries on 127.0.0.1, in a thread of the test process.

`answer(request)` chooses each response: an HTTP status, or None to hold the connection open
without answering (a hung receiver). Every request is kept, with the status it got."""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]  # names in lower case
    body: bytes
    status: int | None  # None: never answered
    at: float  # time.monotonic() on arrival

    @property
    def event(self) -> dict[str, Any]:
        document: dict[str, Any] = json.loads(self.body)
        return document


Answer = Callable[[Received], int | None]


class Receiver:
    def __init__(self, answer: Answer | None = None) -> None:
        self.answer: Answer = answer or (lambda _request: 200)
        self._lock = threading.Lock()
        self._requests: list[Received] = []
        self._closing = threading.Event()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                arrived = Received(
                    self.path,
                    {k.lower(): v for k, v in self.headers.items()},
                    body,
                    None,
                    time.monotonic(),
                )
                status = receiver.answer(arrived)
                receiver._keep(Received(arrived.path, arrived.headers, body, status, arrived.at))
                if status is None:
                    receiver._closing.wait()
                    self.close_connection = True
                    return
                self.send_response(status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def _keep(self, request: Received) -> None:
        with self._lock:
            self._requests.append(request)

    @property
    def requests(self) -> list[Received]:
        with self._lock:
            return list(self._requests)

    def accepted(self) -> list[Received]:
        """Requests answered 2xx."""
        return [r for r in self.requests if r.status is not None and 200 <= r.status < 300]

    def accepted_ids(self) -> list[str]:
        return [r.event["id"] for r in self.accepted()]

    def start(self) -> Receiver:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._closing.set()
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(timeout=5)


@contextlib.contextmanager
def receiving(answer: Answer | None = None) -> Iterator[Receiver]:
    receiver = Receiver(answer).start()
    try:
        yield receiver
    finally:
        receiver.stop()
