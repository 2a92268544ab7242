"""AgentClient against a stand-in agent on loopback: what the scheduler's side makes of answers."""

from __future__ import annotations

import asyncio
import logging

import pytest
from aiohttp import web

from scheduler.protocol import AgentClient, make_run

pytestmark = pytest.mark.unit


def test_runs_with_invalid_ids_are_left_out_and_logged_once(caplog) -> None:
    """An agent from before run ids were checked may hold '..': adopting it would make the
    scheduler ask for /v1/runs/../1 (a 404) at every poll, forever."""
    good = make_run(run_id="ok@2026-01-01T00:00:00Z", job="ok", attempt=1, epoch=1,
                    state="succeeded")
    bad = [dict(good, run_id=bad) for bad in ("..", "a/b", "x\ny")]

    async def runs(request: web.Request) -> web.Response:
        return web.json_response({"runs": [*bad, good]})

    async def body() -> list[list[dict]]:
        app = web.Application()
        app.router.add_get("/v1/runs", runs)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]
        client = AgentClient("a1", f"http://127.0.0.1:{port}", "t" * 32)
        try:
            return [await client.runs(unacked=True) for _ in range(3)]
        finally:
            await client.close()
            await runner.cleanup()

    with caplog.at_level(logging.WARNING, logger="hasched.dispatch"):
        answers = asyncio.run(body())
    assert answers == [[good]] * 3
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [f"agent a1 holds a run with an invalid id {b['run_id']!r}: ignored"
                     for b in bad], lines
