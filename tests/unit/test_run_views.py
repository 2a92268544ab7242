"""What a real Scheduler (standby, no agent reachable) shows of its ledger's runs."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from scheduler.config import load_scheduler_config
from scheduler.daemon import Scheduler
from scheduler.ledger import Change
from scheduler.service import NotFound

pytestmark = pytest.mark.unit

TOKEN = "a-token-of-at-least-thirty-two-characters"
RID = "good@2026-01-01T00:00:00Z"


@pytest.fixture
def sched(tmp_path: Path):
    jobs = tmp_path / "jobs"
    jobs.mkdir()
    (jobs / "good.toml").write_text('[job.good]\ncommand = ["/bin/true"]\nevery = "1h"\n'
                                    'agent = "db1"\n')
    for name in ("db1.token", "api.tokens"):
        (tmp_path / name).write_text(TOKEN + "\n")
        (tmp_path / name).chmod(0o600)
    config = tmp_path / "scheduler.toml"
    config.write_text(f'[scheduler]\nstate_dir = "{tmp_path / "state"}"\n'
                      f'run_dir = "{tmp_path / "run"}"\njobs_dir = "{jobs}"\n'
                      f'api_tokens_file = "{tmp_path / "api.tokens"}"\n'
                      f'[agents.db1]\nurl = "http://127.0.0.1:1"\n'
                      f'token_file = "{tmp_path / "db1.token"}"\nlabels = ["linux"]\n')
    s = Scheduler(load_scheduler_config(config), "standby")
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
