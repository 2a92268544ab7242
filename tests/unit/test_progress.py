"""The run mover: retries, dependency waits, concurrency, pool members it is unsure of."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from scheduler.jobs import Job, Retries
from scheduler.ledger import BatchWriter, Change, Ledger, nominal_iso, utc_iso
from scheduler.progress import RunMover
from scheduler.runs import Run
from scheduler.triggers import IntervalTrigger

pytestmark = pytest.mark.unit

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)  # the mover's clock: mid-day, far from a day's end


class FakeTerm:
    def __init__(self, unsure: list[str] | None = None, before: bool = True) -> None:
        self.active = True
        self.unsure = unsure or []
        self.before = before  # the runs are planned fires from before the term

    def unsure_members(self, job: Any, run: Run) -> list[str]:
        return self.unsure

    def before_term(self, run: Run) -> bool:
        return self.before


class FakeDispatcher:
    def __init__(self) -> None:
        self.sent: list[str] = []
        self.cancelled: list[str] = []

    async def dispatch(self, run: Run, job: Any) -> bool:
        self.sent.append(run.run_id)
        return True

    async def cancel(self, run: Run) -> None:
        self.cancelled.append(run.run_id)


def job(name: str = "j", **kw: Any) -> Job:
    return Job(name=name, command=("true",), trigger=IntervalTrigger(60.0), agent="a", **kw)


class Bench:
    def __init__(self, tmp_path: Path, *jobs: Job, term: FakeTerm | None = None) -> None:
        self.ledger = Ledger(tmp_path / "ledger.sqlite")
        self.jobs = {j.name: j for j in jobs}
        self.term = term or FakeTerm()
        self.dispatcher = FakeDispatcher()
        self.spawned: list[Any] = []

    def mover(self) -> RunMover:
        return RunMover(self.ledger, BatchWriter(self.ledger), lambda: self.jobs,
                        self.term, self.dispatcher, self.spawned.append, clock=lambda: NOW)

    def add(self, name: str, nominal: datetime, state: str = "scheduled", **fields: Any) -> Run:
        rid = f"{name}@{nominal_iso(nominal)}"
        self.ledger.apply([Change("create", rid, fields.pop("attempt", 1), name, {
            "nominal": nominal_iso(nominal), "state": state,
            "scheduled_at": utc_iso(nominal), **fields})])
        return self.ledger.get_run(rid)


def advance(bench: Bench, run: Run) -> Run:
    async def go() -> None:
        await bench.mover().advance(run)
    asyncio.run(go())
    return bench.ledger.get_attempt(*run.key)


def test_a_failed_attempt_gets_its_retry_and_a_lost_one_too(tmp_path: Path) -> None:
    b = Bench(tmp_path, job(retries=Retries(count=1, delay=30.0)))
    finished = NOW - timedelta(seconds=5)
    for state, rid_time in (("failed", NOW - timedelta(minutes=2)),
                            ("lost", NOW - timedelta(minutes=1))):
        run = b.add("j", rid_time, state, finished_at=utc_iso(finished))
        asyncio.run(b.mover().on_final(run))
        retry = b.ledger.get_attempt(run.run_id, 2)
        assert retry is not None and retry.state == "scheduled"
        assert retry.scheduled_at == utc_iso(finished + timedelta(seconds=30))
        assert retry.reason == "retry of attempt 1"


def test_no_retry_after_success_or_beyond_the_count(tmp_path: Path) -> None:
    b = Bench(tmp_path, job(retries=Retries(count=1, delay=30.0)))
    ok = b.add("j", NOW - timedelta(minutes=3), "succeeded")
    last = b.add("j", NOW - timedelta(minutes=2), "failed", attempt=2)
    asyncio.run(b.mover().on_final(ok))
    asyncio.run(b.mover().on_final(last))
    assert b.ledger.get_attempt(ok.run_id, 2) is None
    assert b.ledger.get_attempt(last.run_id, 3) is None


def test_a_run_waits_for_its_dependency_then_goes(tmp_path: Path) -> None:
    b = Bench(tmp_path, job("dep"), job(after=("dep",)))
    run = b.add("j", NOW - timedelta(seconds=1))
    waiting = advance(b, run)
    assert (waiting.state, waiting.reason) == ("scheduled", "waiting for dep")
    assert b.dispatcher.sent == []
    b.add("dep", NOW - timedelta(seconds=2), "succeeded")
    advance(b, waiting)
    assert b.dispatcher.sent == [run.run_id]


def test_a_failed_dependency_cancels_the_run(tmp_path: Path) -> None:
    b = Bench(tmp_path, job("dep"), job(after=("dep",)))
    b.add("dep", NOW - timedelta(seconds=2), "failed")
    done = advance(b, b.add("j", NOW - timedelta(seconds=1)))
    assert (done.state, done.reason) == ("cancelled", "dependency failed: dep")


def test_forbid_skips_a_fire_while_the_previous_run_is_in_flight(tmp_path: Path) -> None:
    b = Bench(tmp_path, job())
    b.add("j", NOW - timedelta(minutes=1), "running", agent="a")
    done = advance(b, b.add("j", NOW - timedelta(seconds=1)))
    assert done.state == "cancelled" and "concurrency=forbid" in done.reason
    assert b.dispatcher.sent == []


def test_replace_cancels_the_run_in_flight_and_sends_the_new_one(tmp_path: Path) -> None:
    b = Bench(tmp_path, job(concurrency="replace"))
    old = b.add("j", NOW - timedelta(minutes=1), "running", agent="a")
    new = b.add("j", NOW - timedelta(seconds=1))
    advance(b, new)
    assert (b.dispatcher.cancelled, b.dispatcher.sent) == ([old.run_id], [new.run_id])


def test_a_run_an_unreconciled_member_may_have_run_is_held(tmp_path: Path) -> None:
    b = Bench(tmp_path, replace(job(), agent=None, pool="workers"), term=FakeTerm(["b"]))
    held = advance(b, b.add("j", NOW - timedelta(seconds=1), agent="a"))
    assert held.state == "scheduled" and held.agent is None
    assert held.reason == "waiting: agent b unreachable, cannot rule out that it already ran"
    assert b.dispatcher.sent == []


def test_a_forbid_run_waits_for_a_member_that_may_still_run_the_job_then_is_cancelled(
        tmp_path: Path) -> None:
    b = Bench(tmp_path, replace(job(), agent=None, pool="workers"),
              term=FakeTerm(["b"], before=False))
    held = advance(b, b.add("j", NOW - timedelta(seconds=1), agent="a"))
    assert (held.state, held.reason) == ("scheduled", "waiting: agent b unreachable, a run of "
                                         "this job may still be running there "
                                         "(concurrency=forbid)")
    late = advance(b, b.add("j", NOW - timedelta(hours=2)))
    assert (late.state, late.reason) == ("cancelled", "agent b stayed unreachable for the "
                                         "misfire grace; not started: a run of this job may "
                                         "still be running there (concurrency=forbid)")
    assert b.dispatcher.sent == []


def test_nothing_moves_outside_an_active_term(tmp_path: Path) -> None:
    b = Bench(tmp_path, job())
    b.term.active = False
    assert advance(b, b.add("j", NOW - timedelta(seconds=1))).state == "scheduled"
    assert b.dispatcher.sent == []


def test_a_run_of_a_job_no_longer_defined_is_cancelled(tmp_path: Path) -> None:
    b = Bench(tmp_path)
    done = advance(b, b.add("gone", NOW - timedelta(seconds=1)))
    assert (done.state, done.reason) == ("cancelled", "job is no longer defined")


def test_a_pause_recalls_the_fires_sent_ahead_and_not_yet_started(tmp_path: Path) -> None:
    b = Bench(tmp_path, job())
    ahead = b.add("j", NOW + timedelta(seconds=10), "running", agent="a")
    b.add("j", NOW + timedelta(seconds=20), "running", agent="a", manual=1)  # asked for: kept
    b.add("j", NOW + timedelta(seconds=30), "running", agent="a",
          started_at=utc_iso(NOW))  # started already: not a recall
    asyncio.run(b.mover().recall_sent_ahead("j"))
    assert b.dispatcher.cancelled == [ahead.run_id]
