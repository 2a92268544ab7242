"""Failover on one machine: A active (epoch 1), B standby with its own state; kill -9 A, promote
B (epoch 2): B adopts A's runs and continues with no duplicate and no missed fire on the agents;
a restarted A (epoch 1) is refused by the agents and stays standby."""

from __future__ import annotations

import time

import pytest
from harness import Lab, dump, duplicates, job_toml, nominal_gaps, wait_for
from test_scheduler_policies import at

from scheduler.protocol import DispatchOrder, StaleEpoch

pytestmark = pytest.mark.integration


def test_failover_promote_standby_adopts_and_continues(lab: Lab) -> None:
    lab.agent("a1")
    lab.agent("a2")
    lab.job("beat", job_toml("beat", every="2s", pool="workers", command="sleep 1",
                             concurrency="allow", misfire="run-all"))
    a, b = lab.failover_pair()
    wait_for("A to run 'beat' 3 times", lambda: len(
        [r for r in a.ledger_rows("beat") if r["state"] == "succeeded"]) >= 3)
    assert b.ledger_rows("beat") == []  # a standby dispatches nothing
    assert a.proc is not None
    a.proc.kill9()
    a_ids = {r["run_id"] for r in lab.agent_runs("beat")}
    time.sleep(3)  # fires pass with no active scheduler
    answer = b.ctl({"op": "promote", "epoch": 2})
    assert answer["ok"] and answer["role"] == "active" and answer["epoch"] == 2, answer
    adopted = {r["run_id"] for r in b.ledger_rows("beat")}
    assert a_ids <= adopted, dump(sorted(a_ids - adopted))
    wait_for("B to run 3 fires of its own", lambda: len(
        [r for r in lab.agent_runs("beat") if r["epoch"] == 2]) >= 3)
    wait_for("every run collected by B", lambda: all(
        r["state"] in ("succeeded", "running", "scheduled", "dispatched")
        for r in b.ledger_rows("beat")))

    # A comes back believing it is active: the agents have seen epoch 2, so A stands down.
    a.start("active")
    wait_for("the restarted A to be standby", lambda: a.status()["role"] == "standby")
    assert a.status()["epoch"] == 1
    with pytest.raises(StaleEpoch):
        lab.agents[0].call("dispatch", DispatchOrder(run_id="beat@2000-01-01T00:00:00Z",
                                                     job="beat", attempt=1, epoch=1,
                                                     command=["true"]))
    mark = max(r["run_id"] for r in lab.agent_runs("beat"))
    wait_for("two more fires by B", lambda: len(
        [r for r in lab.agent_runs("beat") if r["run_id"] > mark]) >= 2)
    runs = [r for r in lab.agent_runs("beat") if r["attempt"] == 1]
    ids = [r["run_id"] for r in runs]
    assert duplicates(ids) == [], dump(runs)
    assert nominal_gaps([i.split("@")[1] for i in ids], 2) == [], dump(sorted(ids))
    assert all(r["epoch"] in (1, 2) for r in runs)
    assert b.status()["role"] == "active"


def test_active_scheduler_refused_for_stale_epoch_demotes_itself(lab: Lab) -> None:
    a1 = lab.agent("a1")
    lab.job("beat", job_toml("beat", every="2s", agent="a1", command="true"))
    a = lab.scheduler("a", role="standby")
    assert a.ctl({"op": "promote", "epoch": 1})["role"] == "active"
    wait_for("a first run of 'beat'", lambda: a.ledger_rows("beat"))
    # A successor (epoch 7) talks to the agent while A still believes it is active.
    a1.call("dispatch", DispatchOrder(run_id="other@2000-01-01T00:00:00Z", job="other",
                                      attempt=1, epoch=7, command=["true"]))
    wait_for("A to demote itself", lambda: a.status()["role"] == "standby")
    assert a.proc is not None
    assert "SUPERSEDED" in a.proc.logtext()
    planned = len(a.ledger_rows("beat"))
    time.sleep(4)  # two fire times pass: a standby plans nothing
    assert len(a.ledger_rows("beat")) == planned
    assert a.status()["epoch"] == 1  # it does not take the successor's epoch as its own


def pooled_toml(fire: str, grace: str = "1h") -> str:
    return (f'[job.pooled]\ncommand = ["true"]\nat = "{fire}"\npool = "workers"\n'
            f'misfire = {{ policy = "run-once", grace = "{grace}" }}\n')


def waiting_for(agent: str) -> str:
    return f"waiting: agent {agent} unreachable, cannot rule out that it already ran"


def test_pool_fire_waits_for_the_member_that_may_have_run_it_then_adopts_it(lab: Lab) -> None:
    lab.agent("a1")
    lab.agent("a2")
    a, b = lab.failover_pair()
    fire = at(4)
    lab.job("pooled", pooled_toml(fire))
    for s in (a, b):
        assert s.ctl({"op": "reload"})["jobs"] == 1
    holder = wait_for("A to run the fire on a pool member", lambda: [
        ag for ag in lab.agents for r in ag.runs() if r["job"] == "pooled"
        and r["state"] == "succeeded"])[0]
    other = next(ag for ag in lab.agents if ag is not holder)
    assert a.proc is not None
    a.proc.kill9()
    holder.proc.kill9()  # down while B becomes active: B cannot know it ran the fire
    assert b.ctl({"op": "promote", "epoch": 2})["role"] == "active"
    held = wait_for("B to hold the missed fire", lambda: [
        r for r in b.ledger_rows("pooled") if r["state"] == "scheduled"
        and r["reason"] == waiting_for(holder.name)])
    assert [r["run_id"] for r in held] == [f"pooled@{fire}"]
    assert [r for r in other.runs() if r["job"] == "pooled"] == []
    holder.start()
    done = wait_for("B to adopt the run once the member answers", lambda: [
        r for r in b.ledger_rows("pooled") if r["state"] == "succeeded"])
    assert [(r["run_id"], r["agent"]) for r in done] == [(f"pooled@{fire}", holder.name)]
    assert [r for r in other.runs() if r["job"] == "pooled"] == [], "the fire ran twice"


def test_pool_fire_is_cancelled_when_the_member_stays_away_past_the_grace(lab: Lab) -> None:
    a1 = lab.agent("a1")
    a2 = lab.agent("a2")
    b = lab.scheduler("b", role="standby")
    fire = at(3)
    lab.job("pooled", pooled_toml(fire, grace="10s"))
    assert b.ctl({"op": "reload"})["jobs"] == 1
    a1.proc.kill9()
    wait_for("the fire time to pass with no active scheduler", lambda: at(-1) > fire,
             deadline=30)
    assert b.ctl({"op": "promote", "epoch": 1})["role"] == "active"
    wait_for("B to hold the missed fire", lambda: [
        r for r in b.ledger_rows("pooled") if r["reason"] == waiting_for("a1")])
    rows = wait_for("the held fire to be cancelled after the grace", lambda: [
        r for r in b.ledger_rows("pooled") if r["state"] == "cancelled"])
    assert [(r["run_id"], r["reason"]) for r in rows] == [(
        f"pooled@{fire}", "agent a1 stayed unreachable for the misfire grace; not sent to "
        "another agent: it may already have run there")]
    assert [r for r in a2.runs() if r["job"] == "pooled"] == []
