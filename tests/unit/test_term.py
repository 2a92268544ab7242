"""The term: activation, demotion, being superseded, reconciling late agents, the epoch told."""

from __future__ import annotations

import asyncio
import logging
import re
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from agentfakes import FakeAgent

from scheduler.adopt import Adopter
from scheduler.agents import AgentPool
from scheduler.jobs import Job
from scheduler.ledger import BatchWriter, Change, Ledger
from scheduler.protocol import StaleEpoch
from scheduler.runs import Run
from scheduler.term import ACTIVE, DEMOTING, STANDBY, Superseded, Term
from scheduler.triggers import IntervalTrigger

pytestmark = pytest.mark.unit

BEGAN = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


class Work:
    """The daemon's hooks: what an active term starts and stops."""

    def __init__(self) -> None:
        self.started: list[tuple[dict[str, str], datetime]] = []
        self.stopped = 0

    async def start(self, latest: dict[str, str], began_at: datetime) -> None:
        self.started.append((latest, began_at))

    async def stop(self) -> None:
        self.stopped += 1


def make_term(tmp_path: Path, *agents: FakeAgent, epoch: int = 5) -> tuple[Term, Work, Ledger]:
    ledger = Ledger(tmp_path / "ledger.sqlite")
    ledger.raise_epoch(epoch)
    pool = AgentPool({a.name: a for a in agents}, {a.name: ["workers"] for a in agents})
    work = Work()
    term = Term(ledger, pool, Adopter(BatchWriter(ledger), pool), work.start, work.stop,
                clock=lambda: BEGAN)
    return term, work, ledger


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_activation_tells_the_answering_agents_adopts_their_runs_and_starts_the_work(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    a, b = FakeAgent("a", epoch=4), FakeAgent("b", up=False)
    a.add("beat@2026-01-01T11:59:00Z", "beat")
    term, work, ledger = make_term(tmp_path, a, b)

    async def go() -> str:
        return await term.activate()

    with caplog.at_level(logging.INFO, "hasched.scheduler"):
        sentence = run(go())
    assert term.role == ACTIVE and term.began_at == BEGAN
    assert a.epoch == 5 and term.told == {"a": 5}
    assert "raise_epoch" not in b.calls  # not answering the probe: not made to hold the failover
    assert term.unreconciled == {"b"}
    assert ledger.get_attempt("beat@2026-01-01T11:59:00Z", 1).agent == "a"
    assert work.started == [({"beat": "2026-01-01T11:59:00Z"}, BEGAN)]
    # One sentence says what the cycle decided.
    assert re.fullmatch(r"active at epoch 5: told and reconciled a; not yet reconciled: b "
                        r"\(waited \d+\.\d{3}s, probe \S+s, told \S+s, adopted \S+s, "
                        r"caught up \S+s\)",
                        sentence), sentence
    assert f"term: {sentence}" in caplog.messages


def test_an_agent_ahead_of_our_epoch_keeps_us_standby(tmp_path: Path) -> None:
    a, b = FakeAgent("a", epoch=6), FakeAgent("b")
    term, work, _ = make_term(tmp_path, a, b)

    async def go() -> None:
        await term.activate()

    with pytest.raises(Superseded, match="epoch 6 > 5"):
        run(go())
    assert term.role == STANDBY and work.started == []
    assert "raise_epoch" not in a.calls + b.calls  # nobody told an epoch we do not own


def test_a_refused_epoch_while_active_demotes_at_once(tmp_path: Path) -> None:
    term, work, _ = make_term(tmp_path, FakeAgent("a"))

    async def go() -> list[str]:
        await term.activate()
        term.superseded("a", StaleEpoch("seen 9", 9))
        roles = [term.role]  # no new dispatch from this moment on
        while term.role != STANDBY:
            await asyncio.sleep(0)
        return roles

    assert run(go()) == [DEMOTING]
    assert work.stopped == 1


def test_reconcile_adopts_from_an_agent_that_answers_later(tmp_path: Path) -> None:
    a, b = FakeAgent("a"), FakeAgent("b", up=False)
    term, _, ledger = make_term(tmp_path, a, b)

    async def go() -> tuple[str | None, str | None]:
        await term.activate()
        first = await term.reconcile()  # b still down: nothing decided, nothing logged
        b.up = True
        b.add("beat@2026-01-01T11:58:00Z", "beat")
        term.pool.mark("b", True)
        return first, await term.reconcile()

    first, second = run(go())
    assert first is None
    assert second == "reconciled with b at epoch 5"
    assert term.unreconciled == set()
    assert ledger.get_attempt("beat@2026-01-01T11:58:00Z", 1).agent == "b"


def test_an_agent_is_told_each_epoch_once(tmp_path: Path) -> None:
    a = FakeAgent("a")
    term, _, _ = make_term(tmp_path, a)

    async def go() -> None:
        assert await term.tell("a") and await term.tell("a")
        assert a.calls.count("raise_epoch") == 1
        sentence = await term.promote(6)
        assert a.epoch == 6 and term.told == {"a": 6}
        assert re.search(r"\(epoch written \S+s, waited \S+s, probe ", sentence), sentence

    run(go())


def test_demotion_stops_the_work_and_says_so(tmp_path: Path) -> None:
    term, work, _ = make_term(tmp_path, FakeAgent("a"))

    async def go() -> str:
        await term.activate()
        return await term.demote()

    assert run(go()) == "standby at epoch 5 (asked to; was active)"
    assert term.role == STANDBY and work.stopped == 1


def test_a_planned_fire_from_before_the_term_waits_for_unreconciled_pool_members(
        tmp_path: Path) -> None:
    term, _, _ = make_term(tmp_path, FakeAgent("a"), FakeAgent("b", up=False))
    run(term.activate())
    pooled = Job(name="j", command=("true",), trigger=IntervalTrigger(60.0), pool="workers")
    before = Run("j@2026-01-01T11:59:00Z", 1, "j", "2026-01-01T11:59:00Z")
    after = Run("j@2026-01-01T12:01:00Z", 1, "j", "2026-01-01T12:01:00Z")
    overlap = replace(pooled, concurrency="allow")
    assert term.unsure_members(overlap, before) == ["b"]
    assert term.unsure_members(overlap, after) == []  # planned in this term: ours alone
    assert term.unsure_members(overlap, Run(before.run_id, 2, "j", before.nominal)) == []
    bound = Job(name="j", command=("true",), trigger=IntervalTrigger(60.0), agent="a")
    assert term.unsure_members(bound, before) == []


def test_a_job_that_must_not_overlap_waits_for_its_unreconciled_agents_whenever_planned(
        tmp_path: Path) -> None:
    """A run the predecessor started may still be running on b: forbid (the default) and
    replace jobs wait for it, the fires of this term and manual runs too."""
    term, _, _ = make_term(tmp_path, FakeAgent("a"), FakeAgent("b", up=False))
    run(term.activate())
    pooled = Job(name="j", command=("true",), trigger=IntervalTrigger(60.0), pool="workers")
    after = Run("j@2026-01-01T12:01:00Z", 1, "j", "2026-01-01T12:01:00Z")
    manual = Run("j@2026-01-01T12:00:30Z", 1, "j", "2026-01-01T12:00:30Z", manual=True)
    assert term.unsure_members(pooled, after) == ["b"]
    assert term.unsure_members(pooled, manual) == ["b"]
    assert term.unsure_members(replace(pooled, concurrency="replace"), after) == ["b"]
    bound_b = replace(pooled, pool=None, agent="b")
    assert term.unsure_members(bound_b, after) == ["b"]
    assert term.unsure_members(replace(pooled, pool=None, agent="a"), after) == []


@pytest.mark.timeout(30)
def test_a_stopped_agent_does_not_hold_the_activation(tmp_path: Path) -> None:
    """b is SIGSTOPped (it accepts, never answers): the term becomes active with a alone,
    b left to reconcile when it answers."""
    a, b = FakeAgent("a", epoch=4), FakeAgent("b")
    b.stopped = True
    ledger = Ledger(tmp_path / "ledger.sqlite")
    ledger.raise_epoch(5)
    pool = AgentPool({"a": a, "b": b}, {"a": ["workers"], "b": ["workers"]},
                     probe_timeout=0.01, push_timeout=0.01, adopt_timeout=0.01)
    work = Work()
    term = Term(ledger, pool, Adopter(BatchWriter(ledger), pool), work.start, work.stop,
                clock=lambda: BEGAN)
    run(term.activate())
    assert term.role == ACTIVE and term.unreconciled == {"b"}
    assert term.told == {"a": 5} and len(work.started) == 1


class Replica:
    """Replication's hooks (scheduler/replication/node.py): what the term asked, in order."""

    following = True

    def __init__(self, ledger: Ledger) -> None:
        self.ledger, self.calls = ledger, []  # type: list[str]

    async def before_active(self) -> None:
        # The drain: what the source still had lands before the epoch is raised.
        self.calls.append(f"drain at epoch {self.ledger.epoch()}")

    def on_standby(self) -> None:
        self.calls.append("follow")


def test_a_promotion_drains_the_stream_before_raising_the_epoch_and_demotion_follows(
        tmp_path: Path) -> None:
    term, _, ledger = make_term(tmp_path, FakeAgent("a", epoch=5))
    term.replica = replica = Replica(ledger)
    run(term.promote(6))
    assert replica.calls == ["drain at epoch 5"] and term.role == ACTIVE
    run(term.demote())
    assert replica.calls == ["drain at epoch 5", "follow"] and term.role == STANDBY


def test_a_superseded_activation_goes_back_to_following(tmp_path: Path) -> None:
    term, _, ledger = make_term(tmp_path, FakeAgent("a", epoch=9))
    term.replica = replica = Replica(ledger)
    with pytest.raises(Superseded):
        run(term.activate())
    assert replica.calls == ["drain at epoch 5", "follow"] and term.role == STANDBY


def test_with_a_replica_a_forbid_job_waits_only_for_the_agent_that_may_hold_its_earlier_run(
        tmp_path: Path) -> None:
    """b and c are away at promotion. The replicated ledger shows the predecessor's unfinished
    run of j on b: this term's run waits for b alone, not for c (which holds nothing of j); a
    job with no unfinished run waits for nobody; a run not yet recorded as sent may be on any
    member, so it holds them all."""
    term, _, ledger = make_term(tmp_path, FakeAgent("a"), FakeAgent("b", up=False),
                                FakeAgent("c", up=False))
    term.replica = Replica(ledger)
    run(term.activate())
    assert term.unreconciled == {"b", "c"}
    pooled = Job(name="j", command=("true",), trigger=IntervalTrigger(60.0), pool="workers")
    after = Run("j@2026-01-01T12:01:00Z", 1, "j", "2026-01-01T12:01:00Z")
    assert term.unsure_members(pooled, after) == []
    ledger.apply([Change("create", "j@2026-01-01T11:59:00Z", 1, "j",
                         {"nominal": "2026-01-01T11:59:00Z", "agent": "b"})])
    assert term.unsure_members(pooled, after) == ["b", "c"]  # scheduled: maybe sent anywhere
    ledger.apply([Change("update", "j@2026-01-01T11:59:00Z", 1, "j",
                         {"state": "running", "agent": "b"})])
    assert term.unsure_members(pooled, after) == ["b"]
    term.replica = None  # no replica: what the predecessor sent where is not known here
    assert term.unsure_members(pooled, after) == ["b", "c"]
