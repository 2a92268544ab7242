"""Retries, dependencies, concurrency=forbid and an agent that goes away, with real processes."""

from __future__ import annotations

import json
import urllib.error
from datetime import UTC, datetime, timedelta

import pytest
from harness import Lab, dump, job_toml, wait_for
from test_scheduler_runs import api_post

pytestmark = pytest.mark.integration


def at(seconds: float) -> str:
    t = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=seconds)
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def by_job(rows: list[dict]) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for r in sorted(rows, key=lambda r: (r["run_id"], r["attempt"])):
        out.setdefault(r["job"], []).append(r)
    return out


def test_failed_run_is_retried_as_a_new_attempt(lab: Lab) -> None:
    a1 = lab.agent("a1")
    lab.job("flaky", job_toml("flaky", every="1h", agent="a1", command="exit 3",
                              misfire="skip") + 'retries = { count = 1, delay = "1s" }\n')
    s = lab.scheduler("a")
    run = api_post(s.port, "/v1/jobs/flaky/run")["run"]
    rows = wait_for("two failed attempts", lambda: (
        r if len(r := [x for x in s.ledger_rows("flaky") if x["state"] == "failed"]) == 2
        else None))
    assert {r["run_id"] for r in rows} == {run["run_id"]}
    assert sorted(r["attempt"] for r in rows) == [1, 2]
    assert all(r["exit_code"] == 3 for r in rows), dump(rows)
    on_agent = sorted(x["attempt"] for x in a1.runs() if x["run_id"] == run["run_id"])
    assert on_agent == [1, 2]


def test_dependent_job_waits_for_its_dependency_and_is_cancelled_when_it_fails(lab: Lab) -> None:
    lab.agent("a1")
    lab.job("deps", "\n".join([
        "[job.first]", 'command = ["sleep", "3"]', f'at = "{at(4)}"', 'agent = "a1"', "",
        "[job.second]", 'command = ["true"]', f'at = "{at(5)}"', 'agent = "a1"',
        'after = ["first"]', "",
        "[job.broken]", 'command = ["false"]', f'at = "{at(4)}"', 'agent = "a1"', "",
        "[job.never]", 'command = ["true"]', f'at = "{at(5)}"', 'agent = "a1"',
        'after = ["broken"]', ""]))
    s = lab.scheduler("a")
    wait_for("'second' to wait for 'first'", lambda: any(
        r["reason"] == "waiting for first" and r["state"] == "scheduled"
        for r in s.ledger_rows("second")))
    jobs = wait_for("'second' to succeed and 'never' to be cancelled", lambda: (
        j if (j := by_job(s.ledger_rows())).get("second", [{}])[0].get("state") == "succeeded"
        and j.get("never", [{}])[0].get("state") == "cancelled" else None))
    assert jobs["second"][0]["started_at"] >= jobs["first"][0]["finished_at"], dump(jobs)
    assert jobs["never"][0]["reason"] == "dependency failed: broken"
    assert jobs["never"][0]["agent"] is None  # never sent anywhere


def test_forbid_refuses_a_manual_run_while_one_is_in_flight(lab: Lab) -> None:
    lab.agent("a1")
    lab.job("hog", job_toml("hog", every="1h", agent="a1", command="sleep 30", misfire="skip",
                            concurrency="forbid"))
    s = lab.scheduler("a")
    first = api_post(s.port, "/v1/jobs/hog/run")["run"]
    wait_for("the first run to be running", lambda: any(
        r["run_id"] == first["run_id"] and r["state"] == "running" for r in s.ledger_rows()))
    with pytest.raises(urllib.error.HTTPError) as refused:
        api_post(s.port, "/v1/jobs/hog/run")
    assert refused.value.code == 409
    error = json.loads(refused.value.read())["error"]
    assert error == (f"job 'hog' has an unfinished run {first['run_id']} (running) and "
                     "concurrency=forbid: no manual run started")
    assert [r["run_id"] for r in s.ledger_rows("hog")] == [first["run_id"]]


def test_forbid_records_an_overlapping_planned_fire_cancelled(lab: Lab) -> None:
    lab.agent("a1")
    lab.job("hog", job_toml("hog", every="2s", agent="a1", command="sleep 5", misfire="skip",
                            concurrency="forbid"))
    s = lab.scheduler("a")
    second = wait_for("an overlapping fire to be cancelled", lambda: [
        r for r in s.ledger_rows("hog") if r["state"] == "cancelled"])
    assert second[0]["reason"] == "previous run still in flight (concurrency=forbid)"


def test_agent_down_keeps_its_runs_and_collects_them_when_back(lab: Lab) -> None:
    a1 = lab.agent("a1")
    lab.agent("a2")
    lab.job("steady", job_toml("steady", every="1h", agent="a1", command="sleep 4",
                               misfire="skip"))
    s = lab.scheduler("a")
    run = api_post(s.port, "/v1/jobs/steady/run")["run"]
    wait_for("the run to be running", lambda: any(
        r["state"] == "running" for r in s.ledger_rows("steady")))
    a1.proc.kill9()  # the agent only: the run's supervisor lives in its own session
    wait_for("the scheduler to see a1 down", lambda: s.status()["agents_reachable"] == 1)
    assert [r["state"] for r in s.ledger_rows("steady")] == ["running"]
    a1.start()
    row = wait_for("the run collected after a1 is back", lambda: [
        r for r in s.ledger_rows("steady") if r["state"] == "succeeded"])
    assert row[0]["run_id"] == run["run_id"] and row[0]["exit_code"] == 0
