"""AgentClient against a stand-in agent on loopback: what the scheduler's side makes of answers."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
from aiohttp import web

from scheduler.protocol import AgentClient, AgentUnreachable, make_run

pytestmark = pytest.mark.unit


@asynccontextmanager
async def stand_in(path: str, handler: Callable[[web.Request], Awaitable[web.Response]],
                   **client: Any) -> AsyncIterator[AgentClient]:
    """An AgentClient ("a1"; `client` its settings) of a stand-in agent on loopback whose only
    route is GET `path`; both are closed on leaving."""
    app = web.Application()
    app.router.add_get(path, handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    agent = AgentClient("a1", f"http://127.0.0.1:{port}", "t" * 32, **client)
    try:
        yield agent
    finally:
        await agent.close()
        await runner.cleanup()


def test_runs_with_invalid_ids_are_left_out_and_logged_once(caplog) -> None:
    """An agent from before run ids were checked may hold '..': adopting it would make the
    scheduler ask for /v1/runs/../1 (a 404) at every poll, forever."""
    good = make_run(run_id="ok@2026-01-01T00:00:00Z", job="ok", attempt=1, epoch=1,
                    state="succeeded")
    bad = [dict(good, run_id=bad) for bad in ("..", "a/b", "x\ny")]

    async def runs(request: web.Request) -> web.Response:
        return web.json_response({"runs": [*bad, good]})

    async def body() -> list[list[dict]]:
        async with stand_in("/v1/runs", runs) as client:
            return [await client.runs(unacked=True) for _ in range(3)]

    with caplog.at_level(logging.WARNING, logger="hasched.dispatch"):
        answers = asyncio.run(body())
    assert answers == [[good]] * 3
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [f"agent a1 holds a run with an invalid id {b['run_id']!r}: ignored"
                     for b in bad], lines


def test_a_call_that_times_out_drops_the_kept_alive_connections_to_that_agent() -> None:
    """A dead node's agent: its kept-alive connections hang (no RST comes back) where a new
    one fails fast or is answered. After one call ran into its bound, the next must not take
    another of those connections (issue 10: 5 s of promotion behind one)."""
    old: set[tuple[str, int]] = set()
    dead, gone = asyncio.Event(), asyncio.Event()

    async def health(request: web.Request) -> web.Response:
        peer = request.transport.get_extra_info("peername") if request.transport else None
        if dead.is_set() and peer in old:
            await gone.wait()  # this connection's peer is gone: no answer before the test ends
        old.add(peer)
        return web.json_response({"epoch": 3})

    async def body() -> tuple[str, dict]:
        async with stand_in("/v1/health", health, timeout=30.0) as client:
            try:
                await asyncio.gather(client.health(), client.health())  # two kept alive
                assert len(old) == 2
                dead.set()
                try:
                    await client.health(timeout=0.2)
                    first = "answered"
                except AgentUnreachable as e:
                    first = str(e)
                return first, await client.health(timeout=5.0)
            finally:
                gone.set()

    first, second = asyncio.run(body())
    assert first.endswith("no answer within 0.2s"), first
    assert second == {"epoch": 3}
