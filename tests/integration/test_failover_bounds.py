"""Failover with an agent that does not answer (SIGSTOP: it accepts connections, answers
nothing, like a hung node): the promotion and the collect passes go on without it, a forbid job
does not overlap itself, and a run cancelled while its agent was away is recorded as it ran."""

from __future__ import annotations

import re

import pytest
from harness import Lab, dump, job_toml, wait_for
from test_scheduler_log import LINE
from test_scheduler_policies import at

from scheduler.times import parse_time

pytestmark = pytest.mark.integration

BOUNDED = re.compile(r"agent a1 unreachable: agent a1 \(\S+\): no answer within 1s")


def test_a_stopped_agent_holds_neither_the_promotion_nor_the_collect_passes(lab: Lab) -> None:
    a1, a2 = lab.agent("a1"), lab.agent("a2")
    lab.job("beat", job_toml("beat", every="1s", pool="workers", command="true",
                             concurrency="allow", misfire="run-all"))
    a, b = lab.failover_pair()
    wait_for("A to run 'beat' on both agents", lambda: {
        r["agent"] for r in a.ledger_rows("beat") if r["state"] == "succeeded"} == {"a1", "a2"})
    assert a.proc is not None and b.proc is not None
    a.proc.kill9()
    a1.freeze()  # B's kept-alive connections to it (its standby probes) hang from now on
    answer = b.ctl({"op": "promote", "epoch": 2})
    assert answer["ok"] and answer["role"] == "active", answer
    log = b.proc.logtext()
    # The probe gave up on a1 at its bound (the client's own timeout is 5 s) ...
    assert BOUNDED.search(log), log[-3000:]
    assert "term: active at epoch 2: told and reconciled a2; not yet reconciled: a1" in log
    # ... and B goes on with a2: runs sent and collected while a1 stays stopped, the passes
    # skipping a1 rather than waiting for it.
    wait_for("B to collect 3 runs of its own from a2", lambda: len([
        r for r in b.ledger_rows("beat") if r["agent"] == "a2" and r["epoch"] == 2
        and r["state"] == "succeeded"]) >= 3)
    wait_for("a pass not to wait for a1", lambda: re.search(
        r"collect pass: agent a1 (unreachable; asked without waiting|still busy from an "
        r"earlier pass; skipped)", b.proc.logtext()))
    assert a1.proc.alive()
    a1.thaw()
    wait_for("B to reconcile with a1", lambda: "term: reconciled with a1 at epoch 2"
             in b.proc.logtext())
    # The failover's phases can be read from the log: every line has its time.
    for text in (b.proc.logtext(), a1.log(), a2.log()):
        bad = [line for line in text.splitlines() if not LINE.match(line)]
        assert bad == [], bad[:5]


def intervals(lab: Lab, job: str) -> list[tuple[str, str, str]]:
    return sorted((r["started_at"], r["finished_at"] or "9999", r["run_id"])
                  for r in lab.agent_runs(job) if r["started_at"])


def test_a_forbid_job_does_not_overlap_itself_when_its_runs_agent_is_away_at_promotion(
        lab: Lab) -> None:
    lab.agent("a1")
    lab.agent("a2")
    lab.job("long", job_toml("long", every="2s", pool="workers", command="sleep 8",
                             concurrency="forbid", misfire="run-all"))
    a, b = lab.failover_pair()
    first = wait_for("A to start a run of 'long'", lambda: [
        r for r in lab.agent_runs("long") if r["state"] == "running"])[0]
    holder = next(ag for ag in lab.agents if first in ag.runs())
    other = next(ag for ag in lab.agents if ag is not holder)
    assert a.proc is not None and b.proc is not None
    a.proc.kill9()
    holder.freeze()  # its run goes on; B cannot know of it
    assert b.ctl({"op": "promote", "epoch": 2})["role"] == "active"
    wait_for("B to plan two fires of its own", lambda: len([
        r for r in b.ledger_rows("long") if r["run_id"] > first["run_id"]]) >= 2)
    assert [r for r in other.runs() if r["job"] == "long"] == [], "a second run overlapped"
    waiting = (f"waiting: agent {holder.name} unreachable, a run of this job may still be "
               "running there (concurrency=forbid)")
    assert any(r["reason"] == waiting for r in b.ledger_rows("long")), dump(b.ledger_rows())
    holder.thaw()
    wait_for("B to adopt the first run", lambda: any(
        r["run_id"] == first["run_id"] for r in b.ledger_rows("long")))
    wait_for("B to start a run after the first ended", lambda: [
        r for r in lab.agent_runs("long") if r["started_at"] and r["started_at"]
        > (holder.call("run", first["run_id"], 1)["finished_at"] or "9999")])
    runs = intervals(lab, "long")
    overlaps = [(x, y) for x, y in zip(runs, runs[1:], strict=False)
                if parse_time(y[0]) < parse_time(x[1])]
    assert overlaps == [], dump(runs)


def test_a_fire_cancelled_while_its_agent_was_away_is_recorded_as_it_ran(lab: Lab) -> None:
    lab.agent("a1")
    lab.agent("a2")
    a, b = lab.failover_pair()
    fire = at(4)
    lab.job("once", f'[job.once]\ncommand = ["true"]\nat = "{fire}"\npool = "workers"\n'
            'misfire = { policy = "run-once", grace = "12s" }\n')
    for s in (a, b):
        assert s.ctl({"op": "reload"})["jobs"] == 1
    holder = wait_for("A to run the fire on a pool member", lambda: [
        ag for ag in lab.agents for r in ag.runs() if r["job"] == "once"
        and r["state"] == "succeeded"])[0]
    assert a.proc is not None
    a.proc.kill9()
    holder.freeze()
    assert b.ctl({"op": "promote", "epoch": 2})["role"] == "active"
    cancelled = wait_for("B to give up on the fire after the grace", lambda: [
        r for r in b.ledger_rows("once") if r["state"] == "cancelled"])
    assert cancelled[0]["reason"].startswith(f"agent {holder.name} stayed unreachable")
    holder.thaw()
    done = wait_for("B to record the fire as it ran", lambda: [
        r for r in b.ledger_rows("once") if r["state"] == "succeeded"])
    assert [(r["run_id"], r["agent"], r["exit_code"]) for r in done] == [
        (f"once@{fire}", holder.name, 0)]
    assert f"recorded cancelled here (agent {holder.name} stayed unreachable" in \
        done[0]["reason"]
    assert len(b.ledger_rows("once")) == 1
