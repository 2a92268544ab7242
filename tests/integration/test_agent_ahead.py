"""Orders sent ahead (`start_at`): recorded at once, started by a real agent at that time, not
before; cancelled, duplicated or interrupted by an agent restart while they wait."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from harness import (
    DEADLINE,
    Agent,
    order,
    run_async,
    wait_final,
)

from scheduler.times import parse_time, utc_iso

pytestmark = pytest.mark.integration


def ahead(seconds: float) -> str:
    return utc_iso(datetime.now(UTC) + timedelta(seconds=seconds))


def stamping(path: Path) -> list[str]:
    """A job that appends the wall-clock time at which it runs to `path`."""
    return ["sh", "-c", f'date +%s.%N >> "{path}"']


def stamps(path: Path) -> list[float]:
    return [float(x) for x in path.read_text().split()] if path.exists() else []


def test_a_run_sent_ahead_waits_then_starts_at_its_time(agent: Agent,
                                                        tmp_path: Path) -> None:
    marks = tmp_path / "marks"
    start_at = ahead(3)

    async def body() -> None:
        c = agent.client()
        created, run = await c.dispatch(order("a@1", stamping(marks), start_at=start_at))
        assert created and run["state"] == "running"
        waiting = await c.run("a@1", 1)
        if parse_time(start_at) > datetime.now(UTC):  # still before its time: nothing started
            assert waiting["started_at"] is None and waiting["pid"] is None, waiting
        done = await wait_final(c, "a@1")
        await c.close()
        assert done["state"] == "succeeded", done
        assert parse_time(done["started_at"]) >= parse_time(start_at), (done, start_at)
        ran = stamps(marks)
        assert len(ran) == 1 and ran[0] >= parse_time(start_at).timestamp(), (ran, start_at)

    run_async(body)


def test_a_cancel_before_the_start_time_starts_nothing(agent: Agent,
                                                      tmp_path: Path) -> None:
    marks = tmp_path / "marks"
    start_at = ahead(30)  # far enough that the cancel lands before it on any machine

    async def body() -> None:
        c = agent.client()
        assert (await c.dispatch(order("c@1", stamping(marks), start_at=start_at)))[0]
        cancelled = await c.cancel("c@1", 1, epoch=1)
        assert cancelled["state"] == "cancelled", cancelled
        assert cancelled["started_at"] is None and cancelled["pid"] is None, cancelled
        again = await c.run("c@1", 1)
        await c.close()
        assert again["state"] == "cancelled" and again["finished_at"], again

    run_async(body)
    assert not agent.supervisors() and not marks.exists(), "a cancelled run must not start"


def test_a_duplicate_of_a_waiting_run_is_refused_and_it_starts_once(
        agent: Agent, tmp_path: Path) -> None:
    marks = tmp_path / "marks"
    start_at = ahead(2)

    async def body() -> None:
        c = agent.client()
        assert (await c.dispatch(order("d@1", stamping(marks), start_at=start_at)))[0]
        created, run = await c.dispatch(order("d@1", stamping(marks), start_at=start_at))
        assert not created and run["run_id"] == "d@1"
        done = await wait_final(c, "d@1")
        await c.close()
        assert done["state"] == "succeeded", done

    run_async(body)
    assert len(stamps(marks)) == 1, stamps(marks)


def test_runs_waiting_when_the_agent_dies_start_once_after_it_is_back(
        agent: Agent, tmp_path: Path) -> None:
    """One run's time passes while the agent is down (started at once when it is back), the
    other's is most likely still ahead (started at its time)."""
    marks = {n: tmp_path / f"{n}.marks" for n in ("past", "future")}
    start = {"past": ahead(3), "future": ahead(12)}

    async def dispatch() -> None:
        c = agent.client()
        for name in marks:
            assert (await c.dispatch(order(f"{name}@1", stamping(marks[name]),
                                           start_at=start[name])))[0]
        await c.close()

    run_async(dispatch)
    agent.kill9()
    while datetime.now(UTC) < parse_time(start["past"]) + timedelta(seconds=0.5):
        time.sleep(0.1)
    assert not marks["past"].exists(), "no agent was up to start it"
    agent.start()

    async def collect() -> None:
        c = agent.client()
        for name in marks:
            done = await wait_final(c, f"{name}@1", deadline=DEADLINE + 15)
            assert done["state"] == "succeeded", done
            assert parse_time(done["started_at"]) >= parse_time(start[name]), (done, start[name])
        await c.close()

    run_async(collect)
    for name, path in marks.items():
        ran = stamps(path)
        assert len(ran) == 1, f"{name}: started {len(ran)} times"
        assert ran[0] >= parse_time(start[name]).timestamp(), (name, ran, start[name])
