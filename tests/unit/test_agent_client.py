"""The controller's agent client gives up on an agent it cannot reach within CONNECT_TIMEOUT,
not the whole call timeout (regression: with a host's link cut, the unwind of a migration
through it waited 60 s for a TCP connection that the dead link dropped, holding up the
migration loop's pass)."""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import Iterator

import pytest

from ferry import agent_client
from ferry.agent_client import AgentClient, AgentUnavailable


@pytest.fixture
def black_hole() -> Iterator[str]:
    """An agent URL whose connection attempts go unanswered: a listener that never accepts,
    its queue full, so the kernel drops further SYNs as a cut link does."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = []
    for _ in range(4):
        filler = socket.socket()
        filler.setblocking(False)
        filler.connect_ex(("127.0.0.1", port))
        fillers.append(filler)
    try:
        yield f"https://127.0.0.1:{port}"
    finally:
        for filler in fillers:
            filler.close()
        listener.close()


async def test_an_unreachable_agent_fails_within_the_connect_timeout(
    black_hole: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(agent_client, "CONNECT_TIMEOUT", 0.5)
    client = AgentClient(ssl.create_default_context(), timeout=30)
    clock = asyncio.get_running_loop()
    started = clock.time()
    try:
        with pytest.raises(AgentUnavailable, match="unreachable"):
            await client.guests(black_hole)
    finally:
        await client.close()
    assert clock.time() - started < 5  # not the 30 s call timeout
