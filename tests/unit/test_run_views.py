"""What a real Scheduler (standby, no agent reachable) shows of its ledger's runs."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from standby import standby_scheduler

from scheduler.daemon import Scheduler
from scheduler.ledger import Change
from scheduler.service import NotFound

pytestmark = pytest.mark.unit

TOKEN = "a-token-of-at-least-thirty-two-characters"
RID = "good@2026-01-01T00:00:00Z"


@pytest.fixture
def sched(tmp_path):
    s = standby_scheduler(tmp_path, TOKEN)
    yield s
    s.ledger.close()


def test_a_collected_runs_output_is_read_from_the_file_the_collector_kept(
        sched: Scheduler, tmp_path: Path) -> None:
    base = tmp_path / "out" / "good.1"
    base.parent.mkdir()
    (base.parent / "good.1.stdout").write_text("hello\n")
    sched.ledger.apply([Change("create", RID, 1, "good", {
        "nominal": "2026-01-01T00:00:00Z", "state": "succeeded", "manual": 1,
        "output_path": str(base)})])
    assert asyncio.run(sched.run_output(RID)) == "hello\n"
    view = sched.get_run(RID)
    assert view["manual"] is True and view["state"] == "succeeded"
    assert [r["run_id"] for r in sched.list_runs(job="good")] == [RID]


def test_the_output_of_an_unknown_run_is_not_found(sched: Scheduler) -> None:
    with pytest.raises(NotFound):
        asyncio.run(sched.run_output("good@2030-01-01T00:00:00Z"))
