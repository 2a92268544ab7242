"""Ledger replication between two schedulers on loopback (two agents, real processes): the
standby follows the active's change log, so a failover (kill -9, or demote, then promote) keeps
what the active knew: pauses, resumes, accepted manual runs, pending retries, run history and
collected output. Promotion and demotion go through the control socket, as Pacemaker's would."""

from __future__ import annotations

import time
import urllib.request

import pytest
from harness import API_TOKEN, REPL_TOKEN, Lab, Scheduler, dump, job_toml, wait_for

pytestmark = pytest.mark.integration
NEVER = "2099-01-01T00:00:00Z"  # a job that only runs when asked to


def promote(s: Scheduler, epoch: int) -> None:
    answer = s.ctl({"op": "promote", "epoch": epoch})
    assert answer.get("role") == "active", answer


def in_sync(active: Scheduler, standby: Scheduler) -> None:
    wait_for(f"{standby.name} in sync with {active.name}", lambda: (
        standby.replication()["state"] == "in-sync"
        and active.replication()["state"] == "primary"
        and standby.replication()["seq"] == active.replication()["seq"]))


def in_sync_pair(lab: Lab) -> tuple[Scheduler, Scheduler]:
    """lab.pair() with A promoted at epoch 1 and B following it in step."""
    a, b = lab.pair()
    promote(a, 1)
    in_sync(a, b)
    return a, b


def run_now(s: Scheduler, job: str) -> str:
    """Ask `s` for a manual run of `job` (accepted: 202); its run id."""
    status, body = s.api("POST", f"/v1/jobs/{job}/run")
    assert status == 202, body
    return body["run"]["run_id"]


def kill(s: Scheduler) -> None:
    assert s.proc is not None
    s.proc.kill9()


def started_by(lab: Lab, job: str, epoch: int) -> list[dict]:
    return [r for r in lab.agent_runs(job) if r["epoch"] == epoch]


def test_a_pause_stays_paused_across_failover_and_failback(lab: Lab) -> None:
    lab.agent("a1")
    lab.agent("a2")
    lab.job("beat", job_toml("beat", every="1s", pool="workers", command="true"))
    a, b = in_sync_pair(lab)
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
    a, b = in_sync_pair(lab)
    for verb in ("pause", "resume", "run"):
        status, body = b.api("POST", f"/v1/jobs/beat/{verb}")
        assert status == 409, (verb, body)
        assert body["error"] == f"this scheduler is standby; the active is {a.url}"
    assert "beat" not in a.paused() and "beat" not in b.paused()
    wait_for("a collected run on the standby", lambda: [
        r for r in b.api("GET", "/v1/runs?job=beat")[1]["runs"] if r["state"] == "succeeded"])
    health = b.api("GET", "/health")[1]
    assert health["role"] == "standby" and health["replication"]["source"] == a.url
    assert health["replica"] is True and a.api("GET", "/health")[1]["replica"] is False
    req = urllib.request.Request(f"{b.url}/v1/runs?job=beat",
                                 headers={"Authorization": f"Bearer {API_TOKEN}"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        assert resp.headers["X-Hasched-Role"] == "standby"
    wait_for("the standby's metrics to say in-sync", lambda: 'hasched_replication_state{state='
             '"in-sync"} 1.0' in b.api("GET", "/metrics")[1])
    # The replication endpoints take the replication token only, and it nothing else.
    assert b.api("GET", "/v1/replication/status", token=API_TOKEN)[0] == 401
    assert b.api("GET", "/v1/replication/status", token=REPL_TOKEN)[0] == 200
    assert a.api("GET", "/v1/jobs", token=REPL_TOKEN)[0] == 401


def once(lab: Lab, run_id: str, attempt: int = 1) -> list[dict]:
    return [r for r in lab.agent_runs(run_id.split("@")[0])
            if r["run_id"] == run_id and r["attempt"] == attempt]


def test_an_accepted_manual_run_and_a_pending_retry_each_run_once_on_the_new_active(
        lab: Lab, tmp_path) -> None:
    a1 = lab.agent("a1")
    lab.agent("a2")
    marker = tmp_path / "failed-once"
    lab.job("later", job_toml("later", at=NEVER, agent="a1", command="echo manual"))
    lab.job("flaky", job_toml("flaky", at=NEVER, pool="workers",
                              command=f"test -e {marker} || {{ touch {marker}; exit 1; }}")
            + 'retries = { count = 1, delay = "6s" }\n')
    a, b = in_sync_pair(lab)
    retry_of = run_now(a, "flaky")
    wait_for("attempt 2 of the flaky run scheduled on A", lambda: [
        r for r in a.ledger_rows("flaky") if r["attempt"] == 2 and r["state"] == "scheduled"])
    a1.stop()  # the manual run is accepted, and waits for its agent
    manual = run_now(a, "later")
    assert any(r["run_id"] == manual for r in b.ledger_rows("later"))  # sync: B holds it
    kill(a)
    promote(b, 2)
    a1.start()
    wait_for("the manual run done on B", lambda: [
        r for r in b.ledger_rows("later") if r["run_id"] == manual and r["state"] == "succeeded"])
    wait_for("the retry done on B", lambda: [
        r for r in b.ledger_rows("flaky") if r["attempt"] == 2 and r["state"] == "succeeded"])
    time.sleep(2)  # a second dispatch, if any, would have gone out by now
    assert len(once(lab, manual)) == 1, dump(lab.agent_runs("later"))
    assert len(once(lab, retry_of, 2)) == 1, dump(lab.agent_runs("flaky"))
    assert once(lab, retry_of, 2)[0]["epoch"] == 2


def test_history_and_output_of_collected_runs_are_on_the_new_active(lab: Lab) -> None:
    lab.agent("a1")
    lab.job("say", job_toml("say", at=NEVER, pool="workers", command="echo said-so"))
    a, b = in_sync_pair(lab)
    rid = run_now(a, "say")
    wait_for("the run collected on A", lambda: a.api("GET", f"/v1/runs/{rid}")[1].get(
        "state") == "succeeded")
    before = a.api("GET", f"/v1/runs/{rid}")[1]
    wait_for("its output mirrored on B", lambda: b.api(
        "GET", f"/v1/runs/{rid}/output")[1] == "said-so\n")
    kill(a)
    promote(b, 2)
    after = b.api("GET", f"/v1/runs/{rid}")[1]
    assert after == before  # manual flag, scheduled_at, everything as A recorded it
    assert after["manual"] is True
    assert b.api("GET", f"/v1/runs/{rid}/output") == (200, "said-so\n")


def test_a_standby_down_for_a_while_catches_up(lab: Lab) -> None:
    lab.agent("a1")
    lab.job("beat", job_toml("beat", every="1s", pool="workers", command="true"))
    a, b = in_sync_pair(lab)
    kill(b)
    wait_for("A alone", lambda: a.replication()["state"] == "alone")
    assert a.api("POST", "/v1/jobs/beat/pause")[0] == 200  # answered without the follower
    seq = a.replication()["seq"]
    b.start("standby")
    in_sync(a, b)
    assert b.replication()["seq"] >= seq and "beat" in b.paused()
    done = {(r["run_id"], r["attempt"]): r for r in a.ledger_rows("beat")
            if r["state"] == "succeeded"}
    mine = {(r["run_id"], r["attempt"]): r for r in b.ledger_rows("beat")}
    assert all(mine.get(k) == r for k, r in done.items()), dump(sorted(set(done) - set(mine)))


def test_a_diverged_ex_active_hands_its_tail_over_then_resyncs(lab: Lab) -> None:
    a1 = lab.agent("a1")
    lab.job("later", job_toml("later", at=NEVER, agent="a1", command="echo manual"))
    lab.job("quiet", job_toml("quiet", at=NEVER, pool="workers", command="true"))
    a, b = in_sync_pair(lab)
    kill(b)  # from here A writes what B never receives
    a1.stop()
    manual = run_now(a, "later")
    assert a.api("POST", "/v1/jobs/quiet/pause")[0] == 200
    kill(a)
    b.start("standby")
    promote(b, 2)
    assert "quiet" not in b.paused() and not [
        r for r in b.ledger_rows("later") if r["run_id"] == manual]
    a1.start()
    a.start("standby")  # comes back: diverged from B, hands its tail over, resyncs
    in_sync(b, a)
    wait_for("the handed-over manual run done on B", lambda: [
        r for r in b.ledger_rows("later") if r["run_id"] == manual and r["state"] == "succeeded"])
    assert "quiet" in b.paused() and "quiet" in a.paused()
    assert len(once(lab, manual)) == 1
    assert a.proc is not None
    text = a.proc.logtext()
    assert "diverged from" in text and f"runs {manual}/1: created on the active" in text
