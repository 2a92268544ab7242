"""kill -9 the scheduler while a run is in flight: after a restart the result is collected and,
on the agents (the ground truth), every fire time ran exactly once."""

from __future__ import annotations

import time

import pytest
from harness import Lab, dump, duplicates, job_toml, nominal_gaps, wait_for

pytestmark = pytest.mark.integration


def test_scheduler_kill9_mid_run_then_restart_loses_and_doubles_nothing(lab: Lab) -> None:
    lab.agent("a1")
    lab.agent("a2")
    lab.job("slow", job_toml("slow", every="4s", pool="workers", command="sleep 3",
                             concurrency="allow", misfire="run-all"))
    s = lab.scheduler("a")
    wait_for("a run of 'slow' in flight", lambda: any(
        r["state"] == "running" for r in s.ledger_rows("slow")))
    assert s.proc is not None
    s.proc.kill9()
    in_flight = [r for r in s.ledger_rows("slow") if r["state"] == "running"]
    time.sleep(5)  # let at least one fire time pass while nobody schedules
    s.start("active")
    for r in in_flight:
        wait_for(f"{r['run_id']} collected after the restart", lambda r=r: any(
            x["run_id"] == r["run_id"] and x["state"] == "succeeded"
            for x in s.ledger_rows("slow")))
    # a few fires after the restart, then the agents' records are the ground truth
    restart_mark = max(r["nominal"] for r in s.ledger_rows("slow"))
    wait_for("two fires after the restart", lambda: len(
        [r for r in lab.agent_runs("slow") if r["run_id"].split("@")[1] > restart_mark]) >= 2)
    runs = [r for r in lab.agent_runs("slow") if r["attempt"] == 1]
    ids = [r["run_id"] for r in runs]
    assert duplicates(ids) == [], dump(runs)
    assert nominal_gaps([i.split("@")[1] for i in ids], 4) == [], dump(sorted(ids))
