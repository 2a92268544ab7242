"""The agent pool: picking an agent, reachability, probes, the epoch push."""

from __future__ import annotations

import asyncio

import pytest
from agentfakes import FakeAgent

from scheduler.agents import AgentPool
from scheduler.jobs import Job
from scheduler.protocol import StaleEpoch
from scheduler.runs import Run
from scheduler.triggers import IntervalTrigger

pytestmark = pytest.mark.unit


def pool_of(*agents: FakeAgent, labels: tuple[str, ...] = ("workers",)) -> AgentPool:
    return AgentPool({a.name: a for a in agents}, {a.name: labels for a in agents})


def job(**kw: object) -> Job:
    return Job(name="j", command=("true",), trigger=IntervalTrigger(60.0), **kw)


def test_a_burst_spreads_over_the_pool_members() -> None:
    """Each pick counts at once: ten fires in one turn do not all go to the first member."""
    pool = pool_of(FakeAgent("b"), FakeAgent("a"))
    picks = [pool.pick(job(pool="workers")) for _ in range(4)]
    assert picks == ["a", "b", "a", "b"]


def test_an_unreachable_member_is_passed_over_while_another_answers() -> None:
    pool = pool_of(FakeAgent("a"), FakeAgent("b"))
    pool.mark("a", False, "down")
    assert [pool.pick(job(pool="workers")) for _ in range(2)] == ["b", "b"]
    pool.mark("b", False, "down")
    assert pool.pick(job(pool="workers")) == "a"  # all down: still bound, it waits there


def test_a_job_bound_to_an_agent_gets_it_and_an_unknown_one_none() -> None:
    pool = pool_of(FakeAgent("a"), FakeAgent("b"))
    assert pool.pick(job(agent="b")) == "b"
    assert pool.pick(job(agent="zz")) is None
    assert pool.pick(job(pool="nobody")) is None


def test_load_is_recounted_from_the_open_runs() -> None:
    pool = pool_of(FakeAgent("a"), FakeAgent("b"))
    pool.recount([Run("j@1", 1, "j", "x", state="running", agent="a"),
                  Run("j@2", 1, "j", "x", state="dispatched", agent="a"),
                  Run("j@3", 1, "j", "x", state="scheduled", agent="b")])  # not handed over
    assert pool.load == {"a": 2, "b": 0}


def test_a_probe_marks_who_answers_and_gives_the_highest_epoch() -> None:
    pool = pool_of(FakeAgent("a", epoch=3), FakeAgent("b", epoch=7, up=False))
    assert asyncio.run(pool.probe()) == 3
    assert pool.answering() == ["a"] and pool.reachable_count() == 1
    assert asyncio.run(pool_of(FakeAgent("c", up=False)).probe()) == -1


def test_the_epoch_push_says_who_did_not_answer_and_raises_when_superseded() -> None:
    down, ahead, old = FakeAgent("d", up=False), FakeAgent("e", epoch=9), FakeAgent(
        "o", knows_epoch_push=False)
    pool = pool_of(down, ahead, old)
    assert asyncio.run(pool.push_epoch("d", 5)) is False
    assert pool.reachable["d"] is False
    with pytest.raises(StaleEpoch):
        asyncio.run(pool.push_epoch("e", 5))
    # An agent from before the push: our first order raises its epoch, so it counts as told.
    assert asyncio.run(pool.push_epoch("o", 5)) is True


@pytest.mark.timeout(30)
def test_a_probe_waits_for_a_stopped_agent_only_up_to_its_bound() -> None:
    """A SIGSTOPped agent never answers: the probe ends with the others' answer, that agent
    marked unreachable (without the bound the fake hangs, and the test with it)."""
    stopped = FakeAgent("b", epoch=7)
    stopped.stopped = True
    pool = AgentPool({"a": FakeAgent("a", epoch=3), "b": stopped}, {"a": [], "b": []},
                     probe_timeout=0.01)
    assert asyncio.run(pool.probe()) == 3
    assert pool.answering() == ["a"]


@pytest.mark.timeout(30)
def test_an_epoch_push_to_a_stopped_agent_gives_up_at_its_bound() -> None:
    stopped = FakeAgent("a")
    stopped.stopped = True
    pool = AgentPool({"a": stopped}, {"a": []}, push_timeout=0.01)
    assert asyncio.run(pool.push_epoch("a", 4)) is False
    assert pool.answering() == []
