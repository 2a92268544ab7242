"""Manual runs have an identity of their own."""

from __future__ import annotations

import json
import urllib.request

import pytest
from conftest import API_TOKEN, Lab, job_toml, wait_for

pytestmark = pytest.mark.integration


def run_now(port: int, job: str) -> dict:
    req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/jobs/{job}/run", data=b"",
                                 method="POST", headers={"Authorization": f"Bearer {API_TOKEN}"})
    with urllib.request.urlopen(req, timeout=60) as resp:
        return json.loads(resp.read())["run"]


def test_three_manual_runs_in_one_second_are_three_runs(lab: Lab) -> None:
    a1 = lab.agent("a1")
    # every second: the manual runs land on seconds that have a scheduled fire too
    lab.job("hello", job_toml("hello", every="1s", agent="a1", command="echo hi",
                              concurrency="allow"))
    s = lab.scheduler("a")
    runs = [run_now(s.port, "hello") for _ in range(3)]
    ids = [r["run_id"] for r in runs]
    # They used to be one: hello@<that second>, which was also that second's scheduled run.
    assert len(set(ids)) == 3, ids
    assert all(r["manual"] and "~manual-" in r["run_id"] for r in runs)
    wait_for("the three manual runs to succeed", lambda: all(
        {r["run_id"]: r for r in s.ledger_rows("hello")}.get(i, {}).get("state") == "succeeded"
        for i in ids))
    on_agent = {r["run_id"] for r in a1.runs()}
    assert set(ids) <= on_agent
    scheduled = {r["run_id"] for r in s.ledger_rows("hello") if not r["manual"]}
    assert scheduled and not scheduled & set(ids)
    assert all(r["nominal"] == r["run_id"].partition("@")[2].partition("~")[0]
               for r in s.ledger_rows("hello"))
