"""Missed fires with real processes: what a job may catch up, and what it must not."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from harness import Lab, dump, job_toml, wait_for
from test_scheduler_policies import at

pytestmark = pytest.mark.integration


def once_toml(name: str, when: str, **kw: str) -> str:
    lines = [f"[job.{name}]", 'command = ["true"]', f'at = "{when}"', 'agent = "a1"']
    lines += [f'{k} = "{v}"' for k, v in kw.items()]
    return "\n".join(lines) + "\n"


def test_a_new_job_does_not_catch_up_a_fire_from_before_it_existed(lab: Lab) -> None:
    a1 = lab.agent("a1")
    lab.job("late", once_toml("late", at(-3)))  # within the 1h misfire grace, but before the job
    lab.job("tick", job_toml("tick", every="2s", agent="a1", command="true"))
    s = lab.scheduler("a")
    # Missed fires are recorded when the scheduler becomes active, before its plan loop starts:
    # a planned fire of 'tick' collected means the catch-up is over.
    wait_for("a planned run of 'tick' collected", lambda: any(
        r["state"] == "succeeded" and not r["manual"] for r in s.ledger_rows("tick")))
    assert s.ledger_rows("late") == [], dump(s.ledger_rows("late"))
    assert [r for r in a1.runs() if r["job"] == "late"] == []


def test_a_standby_that_knew_the_job_runs_the_fire_missed_during_failover(lab: Lab) -> None:
    a1 = lab.agent("a1")
    a, b = lab.failover_pair()
    fire = at(20)  # room for a loaded machine: A must still be alive until then
    lab.job("once", once_toml("once", fire))
    for s in (a, b):
        assert s.ctl({"op": "reload"})["jobs"] == 1
    assert a.proc is not None
    a.proc.kill9()
    assert datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ") < fire, \
        "the machine stalled: the active was killed after the fire time it had to miss"
    wait_for("the fire time to pass", lambda: datetime.now(UTC).strftime(
        "%Y-%m-%dT%H:%M:%SZ") > fire, deadline=60)
    assert b.ctl({"op": "promote", "epoch": 2})["role"] == "active"
    rows = wait_for("B to run the missed fire", lambda: [
        r for r in b.ledger_rows("once") if r["state"] == "succeeded"])
    assert [r["run_id"] for r in rows] == [f"once@{fire}"], dump(rows)
    assert [r["run_id"] for r in a1.runs() if r["job"] == "once"] == [f"once@{fire}"]


def test_runs_left_scheduled_by_an_earlier_term_follow_the_misfire_grace(lab: Lab) -> None:
    a1 = lab.agent("a1")
    s = lab.scheduler("a", role="standby")
    assert s.ctl({"op": "promote", "epoch": 1})["role"] == "active"
    fire = at(5)
    lab.job("brief", once_toml("brief", fire) + 'misfire = { policy = "run-once", grace = "4s" }\n')
    lab.job("patient", once_toml("patient", fire))  # default grace: 1h
    assert s.ctl({"op": "reload"})["jobs"] == 2
    a1.proc.kill9()  # its runs stay scheduled: the agent is down
    wait_for("both fires recorded and waiting for a1", lambda: len([
        r for r in s.ledger_rows() if r["state"] == "scheduled"
        and (r["reason"] or "").startswith("agent a1 unreachable")]) == 2)
    assert s.ctl({"op": "demote"})["role"] == "standby"
    a1.start()
    wait_for("the 4s grace of 'brief' to pass", lambda: at(-5) > fire, deadline=30)
    assert s.ctl({"op": "promote", "epoch": 2})["role"] == "active"
    patient = wait_for("'patient' (within its grace) to run", lambda: [
        r for r in s.ledger_rows("patient") if r["state"] == "succeeded"])
    assert patient[0]["run_id"] == f"patient@{fire}"
    brief = s.ledger_rows("brief")
    assert [(r["state"], r["reason"]) for r in brief] == [
        ("cancelled", "missed: not sent within the misfire grace (4s)")], dump(brief)
    assert [r["run_id"] for r in a1.runs()] == [f"patient@{fire}"]


def test_a_schedule_changed_while_down_does_not_catch_up_fires_from_before_the_change(
        lab: Lab) -> None:
    a1 = lab.agent("a1")
    lab.job("moved", once_toml("moved", at(3600)))
    lab.job("tick", job_toml("tick", every="2s", agent="a1", command="true"))
    first_start = at(0)
    s = lab.scheduler("a")
    wait_for("the first start to be under way", lambda: any(
        r["state"] == "succeeded" for r in s.ledger_rows("tick")))
    assert s.proc is not None
    s.proc.kill9()
    # While it is down the job is moved to a time that has passed since the first start saw
    # the job (well after it: the ledger keeps whole seconds), but that no schedule in force
    # then ever had.
    wait_for("3 s past the first start", lambda: at(-3) > first_start, deadline=30)
    moved_to = at(-1)
    lab.job("moved", once_toml("moved", moved_to))
    wait_for("a second to pass", lambda: at(0) > moved_to, deadline=10)
    started = at(0)
    s.start("active")
    wait_for("a planned run of 'tick' after the restart", lambda: any(
        r["state"] == "succeeded" and not r["manual"] and r["nominal"] > started
        for r in s.ledger_rows("tick")))
    assert s.ledger_rows("moved") == [], dump(s.ledger_rows("moved"))
    assert [r for r in a1.runs() if r["job"] == "moved"] == []
