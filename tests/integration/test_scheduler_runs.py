"""A scheduler and two agents, real processes: runs fire, are collected, and both sides agree."""

from __future__ import annotations

import json
import urllib.parse
import urllib.request

import pytest
from harness import API_TOKEN, Lab, dump, job_toml, wait_for

pytestmark = pytest.mark.integration


def api_post(port: int, path: str) -> dict:
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=b"{}", method="POST",
                                 headers={"Authorization": f"Bearer {API_TOKEN}",
                                          "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.loads(resp.read())


def test_interval_job_runs_on_its_agent_and_ledger_agrees_with_agent(lab: Lab) -> None:
    a1, a2 = lab.agent("a1"), lab.agent("a2")
    lab.job("tick", job_toml("tick", every="2s", agent="a1", command="echo hello-from-tick"))
    s = lab.scheduler("a")

    def done() -> list[dict]:
        rows = [r for r in s.ledger_rows("tick") if r["state"] == "succeeded"]
        return rows if len(rows) >= 3 else []

    rows = wait_for("3 runs of 'tick' collected as succeeded", done)
    on_agent = wait_for("the agent to record the acks", lambda: (
        recs if all(recs.get((r["run_id"], r["attempt"]), {}).get("acked") for r in rows)
        else None) if (recs := {(x["run_id"], x["attempt"]): x for x in a1.runs()}) else None)
    for r in rows:
        rec = on_agent[(r["run_id"], r["attempt"])]
        assert rec["state"] == "succeeded", dump(rec)
        assert r["exit_code"] == rec["exit_code"] == 0
        assert r["agent"] == "a1"
        assert r["run_id"] == f"tick@{r['nominal']}"
        assert s.output_file(r, "stdout").read_text() == "hello-from-tick\n"
    assert [x for x in a2.runs() if x["job"] == "tick"] == []


def test_a_silent_stream_is_not_fetched_nor_written_and_reads_as_empty(lab: Lab) -> None:
    lab.agent("a1")
    lab.job("quiet", job_toml("quiet", every="1h", agent="a1", command="echo only-err >&2",
                              misfire="skip"))
    s = lab.scheduler("a")
    run_id = api_post(s.port, "/v1/jobs/quiet/run")["run"]["run_id"]
    row = wait_for("the manual run collected", lambda: next(
        (r for r in s.ledger_rows("quiet") if r["state"] == "succeeded" and r["output_path"]),
        None))
    assert not s.output_file(row, "stdout").exists(), dump(row)
    assert s.output_file(row, "stderr").read_text() == "only-err\n"

    def output(stream: str) -> str:
        req = urllib.request.Request(
            f"http://127.0.0.1:{s.port}/v1/runs/{urllib.parse.quote(run_id)}/output"
            f"?stream={stream}", headers={"Authorization": f"Bearer {API_TOKEN}"})
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.read().decode()

    assert output("stdout") == ""
    assert output("stderr") == "only-err\n"


def test_agent_killed_mid_run_ends_failed_with_reason(lab: Lab) -> None:
    lab.agent("a1")
    a2 = lab.agent("a2")
    lab.job("long", job_toml("long", every="1h", agent="a2", command="sleep 60",
                             misfire="skip"))
    s = lab.scheduler("a")
    run = api_post(s.port, "/v1/jobs/long/run")["run"]
    key = (run["run_id"], run["attempt"])

    def state() -> str:
        return {(r["run_id"], r["attempt"]): r for r in s.ledger_rows("long")}[key]["state"]

    wait_for("the manual run to be running on a2", lambda: state() == "running")
    wait_for("the job process on a2", lambda: any(
        x["run_id"] == key[0] and x.get("pid") for x in a2.runs()))
    a2.kill9_with_runs()
    a2.start()
    wait_for("the run to end failed", lambda: state() == "failed")
    row = {(r["run_id"], r["attempt"]): r for r in s.ledger_rows("long")}[key]
    assert row["reason"], dump(row)
    assert row["finished_at"]
