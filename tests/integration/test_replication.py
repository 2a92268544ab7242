"""Ledger replication between two schedulers on loopback (two agents, real processes): the
standby follows the active's change log, so a failover (kill -9, or demote, then promote) keeps
what the active knew: pauses, resumes, accepted manual runs, pending retries, run history and
collected output. Promotion and demotion go through the control socket, as Pacemaker's would."""

from __future__ import annotations

import time

import pytest
from harness import API_TOKEN, REPL_TOKEN, Lab, Scheduler, dump, job_toml, wait_for

pytestmark = pytest.mark.integration


def promote(s: Scheduler, epoch: int) -> None:
    answer = s.ctl({"op": "promote", "epoch": epoch})
    assert answer.get("role") == "active", answer


def in_sync(active: Scheduler, standby: Scheduler) -> None:
    wait_for(f"{standby.name} in sync with {active.name}", lambda: (
        standby.replication()["state"] == "in-sync"
        and active.replication()["state"] == "primary"
        and standby.replication()["seq"] == active.replication()["seq"]))


def kill(s: Scheduler) -> None:
    assert s.proc is not None
    s.proc.kill9()


def started_by(lab: Lab, job: str, epoch: int) -> list[dict]:
    return [r for r in lab.agent_runs(job) if r["epoch"] == epoch]


def test_a_pause_stays_paused_across_failover_and_failback(lab: Lab) -> None:
    lab.agent("a1")
    lab.agent("a2")
    lab.job("beat", job_toml("beat", every="1s", pool="workers", command="true"))
    a, b = lab.pair()
    promote(a, 1)
    in_sync(a, b)
    status, body = a.api("POST", "/v1/jobs/beat/pause")
    assert status == 200 and body["paused"] is True, body
    # Sync mode: the answer came once B held the pause durably.
    assert "beat" in b.paused()
    kill(a)
    promote(b, 2)
    time.sleep(3)  # three fire times pass on B
    assert started_by(lab, "beat", 2) == [], dump(started_by(lab, "beat", 2))
    assert b.api("GET", "/v1/jobs/beat")[1]["paused"] is True

    # Failback: A comes back standby, follows B; a resume on B stays resumed on A.
    a.start("standby")
    in_sync(b, a)
    assert b.api("POST", "/v1/jobs/beat/resume")[0] == 200
    assert "beat" not in a.paused()
    assert b.ctl({"op": "demote"})["role"] == "standby"
    promote(a, 3)
    wait_for("A to run beat at epoch 3", lambda: started_by(lab, "beat", 3))
    assert a.api("GET", "/v1/jobs/beat")[1]["paused"] is False


def test_a_standby_refuses_writes_naming_the_active_and_serves_reads(lab: Lab) -> None:
    lab.agent("a1")
    lab.job("beat", job_toml("beat", every="1s", pool="workers", command="echo hi"))
    a, b = lab.pair()
    promote(a, 1)
    in_sync(a, b)
    for verb in ("pause", "resume", "run"):
        status, body = b.api("POST", f"/v1/jobs/beat/{verb}")
        assert status == 409, (verb, body)
        assert body["error"] == f"this scheduler is standby; the active is {a.url}"
    assert "beat" not in a.paused() and "beat" not in b.paused()
    wait_for("a collected run on the standby", lambda: [
        r for r in b.api("GET", "/v1/runs?job=beat")[1]["runs"] if r["state"] == "succeeded"])
    health = b.api("GET", "/health")[1]
    assert health["role"] == "standby" and health["replication"]["source"] == a.url
    # The replication endpoints take the replication token only, and it nothing else.
    assert b.api("GET", "/v1/replication/status", token=API_TOKEN)[0] == 401
    assert b.api("GET", "/v1/replication/status", token=REPL_TOKEN)[0] == 200
    assert a.api("GET", "/v1/jobs", token=REPL_TOKEN)[0] == 401
