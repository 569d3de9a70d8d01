"""Many HTTPS listeners in one event loop, each with its own ASGI app and TLS context.

`ferry agent serve` gives each host a `uvicorn.Server`, which wakes ten times a second for its
housekeeping: fine for a few hosts, a steady load for a thousand. Here every listener is a plain
asyncio server speaking uvicorn's HTTP protocol, so each host keeps its own port, its own
certificate and its own pinned client check (what the controller meets is exactly an agent),
and an idle listener costs nothing. Responses carry no Date header (no ticking clock).
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
from collections.abc import Callable
from typing import Any

import uvicorn
from uvicorn.server import ServerState

log = logging.getLogger(__name__)
POLL_S = 0.05


def bind_loopback(port: int = 0, address: str = "127.0.0.1") -> socket.socket:
    """A listening TCP socket (port 0: the kernel picks a free one)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((address, port))
        sock.listen(128)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


class Listeners:
    """The listeners of one process; `close()` stops them all, letting answers in progress end."""

    def __init__(self) -> None:
        self.state = ServerState()
        self._servers: list[asyncio.Server] = []

    async def add(self, app: Callable[..., Any], sock: socket.socket, tls: ssl.SSLContext) -> None:
        config = uvicorn.Config(app, log_config=None, log_level="warning", access_log=False)
        config.load()
        loop = asyncio.get_running_loop()
        server = await loop.create_server(self._protocol(config), sock=sock, ssl=tls, backlog=128)
        self._servers.append(server)

    def _protocol(self, config: uvicorn.Config) -> Callable[[], asyncio.Protocol]:
        def make() -> asyncio.Protocol:
            return config.http_protocol_class(  # type: ignore[call-arg]
                config=config, server_state=self.state, app_state={}
            )

        return make

    async def close(self, grace: float = 3.0) -> None:
        for server in self._servers:
            server.close()
        for connection in list(self.state.connections):
            connection.shutdown()
        for _ in range(int(grace / POLL_S)):
            if not (self.state.connections or self.state.tasks):
                break
            await asyncio.sleep(POLL_S)
        for task in list(self.state.tasks):
            task.cancel()
        for connection in list(self.state.connections):
            transport = getattr(connection, "transport", None)
            if transport is not None:
                transport.abort()
        await asyncio.gather(*(s.wait_closed() for s in self._servers), return_exceptions=True)
        self._servers.clear()
