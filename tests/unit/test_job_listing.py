"""GET /v1/jobs's listing from the real Scheduler: O(jobs) reads, same views as one job's."""

from __future__ import annotations

import json

import pytest

from scheduler.config import load_scheduler_config
from scheduler.daemon import Scheduler
from scheduler.ledger import Change

pytestmark = pytest.mark.unit

TOKEN = "unit-agent-token-0123456789abcdef0123"


@pytest.fixture
def scheduler(tmp_path):
    jobs = tmp_path / "jobs"
    jobs.mkdir()
    (jobs / "a.toml").write_text("".join(
        f'[job.j{i}]\ncommand = ["/bin/true"]\nevery = "{i + 1}m"\nagent = "a1"\n\n'
        for i in range(50)))
    token = tmp_path / "a1.token"
    token.write_text(TOKEN + "\n")
    token.chmod(0o600)
    config = tmp_path / "scheduler.toml"
    config.write_text(f'[scheduler]\nstate_dir = "{tmp_path / "state"}"\n'
                      f'run_dir = "{tmp_path / "run"}"\njobs_dir = "{jobs}"\n'
                      f'[agents.a1]\nurl = "http://127.0.0.1:1"\ntoken_file = "{token}"\n')
    sched = Scheduler(load_scheduler_config(config), "standby")
    yield sched
    sched.ledger.close()


def test_listing_reads_the_job_state_once_whatever_the_number_of_jobs(scheduler, monkeypatch):
    scheduler.ledger.apply([Change("job", job="j7", fields={"paused": True})])
    queries = []
    real = scheduler.ledger._query
    monkeypatch.setattr(scheduler.ledger, "_query",
                        lambda *a, **kw: queries.append(a[0]) or real(*a, **kw))
    listing = json.loads("".join(scheduler.job_listing()))
    assert len(queries) == 1  # it was one read of the whole job_state table per job
    assert [j["name"] for j in listing["jobs"]] == sorted(f"j{i}" for i in range(50))
    assert listing["definitions"] == {"stale": False}
    by_name = {j["name"]: j for j in listing["jobs"]}
    assert by_name["j7"]["paused"] is True and by_name["j7"]["next_fire"] is None
    for name in ("j0", "j7", "j49"):
        one = scheduler.get_job(name)
        # next_fire is computed at each call: equal unless a fire fell between the two
        assert {k: v for k, v in one.items() if k != "next_fire"} == \
            {k: v for k, v in by_name[name].items() if k != "next_fire"}
