"""The collect pass and reconciliation against in-process agents: a stopped agent does not hold
the pass, and an agent's record overrules a run this scheduler ended without it."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from agentfakes import FakeAgent

from scheduler.adopt import Adopter
from scheduler.agents import AgentPool
from scheduler.collect import Collector
from scheduler.ledger import BatchWriter, Change, Ledger
from scheduler.runs import Run

pytestmark = pytest.mark.unit

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
COALESCED = "missed: coalesced into the fire of 2026-01-01T11:59:00Z (misfire policy run-once)"


class Parts:
    def __init__(self, tmp_path: Path, *agents: FakeAgent) -> None:
        self.ledger = Ledger(tmp_path / "ledger.sqlite")
        self.writer = BatchWriter(self.ledger)
        self.pool = AgentPool({a.name: a for a in agents}, {a.name: ["workers"] for a in agents},
                              adopt_timeout=0.01)
        self.finals: list[Run] = []

        async def told(agent: str) -> bool:
            return True

        async def final(run: Run) -> None:
            self.finals.append(run)

        self.collector = Collector(self.ledger, self.writer, self.pool, tmp_path / "output",
                                   lambda: 5, told, lambda a, e: None, final, wait=0.01)

    def row(self, run_id: str, agent: str, **fields: Any) -> None:
        self.ledger.apply([Change("create", run_id, 1, run_id.split("@")[0],
                                  {"nominal": run_id.split("@")[1], "agent": agent})])
        if fields:
            self.ledger.apply([Change("update", run_id, 1, fields=fields)])

    def get(self, run_id: str) -> Run:
        run = self.ledger.get_attempt(run_id, 1)
        assert run is not None
        return run


def run(coro: Any) -> Any:
    return asyncio.run(coro)


@pytest.mark.timeout(30)
def test_a_collect_pass_goes_on_without_a_stopped_agent_and_skips_it_until_it_answers(
        tmp_path: Path) -> None:
    a, b = FakeAgent("a"), FakeAgent("b")
    b.stopped = True
    parts = Parts(tmp_path, a, b)
    parts.row("x@2026-01-01T11:00:00Z", "a", state="running")
    parts.row("y@2026-01-01T11:00:00Z", "b", state="running")
    a.add("x@2026-01-01T11:00:00Z", "x", state="succeeded", exit_code=0,
          finished_at="2026-01-01T11:00:01.000000Z")
    b.add("y@2026-01-01T11:00:00Z", "y", state="succeeded", exit_code=0,
          finished_at="2026-01-01T11:00:01.000000Z")

    async def go() -> tuple[int, int]:
        await parts.collector.collect()
        assert parts.get("x@2026-01-01T11:00:00Z").state == "succeeded"  # a collected
        await parts.collector.collect()  # b still stopped: not asked again meanwhile
        asked_while_stopped = b.calls.count("runs")
        b.stopped = False
        while parts.collector.in_flight():
            await asyncio.sleep(0.01)
        await parts.collector.collect()
        return asked_while_stopped, b.calls.count("runs")

    asked_while_stopped, asked = run(go())
    assert asked_while_stopped == 1 and asked == 2
    assert a.acked == [("x@2026-01-01T11:00:00Z", 1)]
    assert parts.get("y@2026-01-01T11:00:00Z").state == "succeeded"
    assert b.acked == [("y@2026-01-01T11:00:00Z", 1)]


def test_a_run_cancelled_here_that_its_agent_ran_is_collected_as_it_ran(tmp_path: Path) -> None:
    a = FakeAgent("a")
    parts = Parts(tmp_path, a)
    rid = "beat@2026-01-01T11:58:00Z"
    parts.row(rid, "a", state="cancelled", reason=COALESCED,
              finished_at="2026-01-01T11:59:30.000000Z")
    a.add(rid, "beat", state="failed", exit_code=3, finished_at="2026-01-01T11:58:05.000000Z")
    run(parts.collector.collect())
    got = parts.get(rid)
    assert (got.state, got.exit_code, got.agent) == ("failed", 3, "a")
    assert got.started_at == "2026-01-01T00:00:00.000000Z"
    assert got.finished_at == "2026-01-01T11:58:05.000000Z"
    assert [r.state for r in parts.finals] == ["failed"]  # its retries follow as for any run
    assert a.acked == [(rid, 1)]


def test_a_run_cancelled_here_and_still_running_on_its_agent_is_reopened_at_adoption(
        tmp_path: Path) -> None:
    a = FakeAgent("a")
    parts = Parts(tmp_path, a)
    rid = "beat@2026-01-01T11:58:00Z"
    parts.row(rid, "a", state="cancelled", reason=COALESCED,
              finished_at="2026-01-01T11:59:30.000000Z")
    parts.row("skip@2026-01-01T11:58:00Z", "a", state="cancelled", reason="skipped")
    a.add(rid, "beat")
    a.add("skip@2026-01-01T11:58:00Z", "skip", state="cancelled", started_at=None)
    adopter = Adopter(parts.writer, parts.pool)
    run(adopter.adopt(NOW, ["a"]))
    got = parts.get(rid)
    assert (got.state, got.agent, got.finished_at) == ("running", "a", None)
    assert got.reason == (f"recorded cancelled here ({COALESCED}) before agent a showed that "
                          "it ran")
    # Cancelled there too, never started: nothing to correct.
    assert parts.get("skip@2026-01-01T11:58:00Z").reason == "skipped"
