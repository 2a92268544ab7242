"""How far behind its fires the scheduler is (scheduler/backlog.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import pytest

from scheduler.backlog import behind_seconds, overloaded
from scheduler.ledger import nominal_iso, parse_time

pytestmark = pytest.mark.unit

NOW = datetime(2026, 12, 1, 12, 0, 0, tzinfo=UTC)
JOBS = {"plain": SimpleNamespace(after=()), "child": SimpleNamespace(after=("plain",))}


def row(job: str = "plain", ago: float = 0.0, state: str = "scheduled", started: bool = False,
        attempt: int = 1, retry_ago: float | None = None) -> dict:
    return {"job": job, "state": state, "attempt": attempt,
            "nominal": nominal_iso(NOW - timedelta(seconds=ago)),
            "scheduled_at": nominal_iso(NOW - timedelta(seconds=retry_ago if retry_ago is not None
                                                         else ago + 1)),
            "started_at": nominal_iso(NOW) if started else None}


def behind(rows: list[dict], plan_next: datetime | None = None) -> float:
    return behind_seconds(NOW, plan_next, rows, JOBS, parse_time)


def test_nothing_due_is_not_behind() -> None:
    assert behind([]) == 0.0
    assert behind([row(ago=-5)], plan_next=NOW + timedelta(seconds=3)) == 0.0


def test_the_oldest_due_fire_not_started_sets_the_figure_whatever_its_state() -> None:
    rows = [row(ago=30, started=True, state="running"), row(ago=12, state="running"),
            row(ago=7, state="dispatched"), row(ago=3)]
    assert behind(rows) == 12.0


def test_the_planning_loop_lagging_counts_too() -> None:
    assert behind([row(ago=2)], plan_next=NOW - timedelta(seconds=5)) == 5.0


def test_dependency_waits_are_not_behind_but_a_retry_is_from_its_own_time() -> None:
    assert behind([row(job="child", ago=600)]) == 0.0
    assert behind([row(job="child", ago=600, state="dispatched")]) == 600.0
    assert behind([row(ago=600, attempt=2, retry_ago=4)]) == 4.0


def test_overloaded_past_the_threshold() -> None:
    assert not overloaded(10.0, 10.0)
    assert overloaded(10.5, 10.0)


def test_typed_runs_count_as_rows_do() -> None:
    assert behind([SimpleNamespace(**row(ago=9, state="dispatched"))]) == 9.0
