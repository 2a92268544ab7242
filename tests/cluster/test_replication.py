"""Ledger replication on the real promotable clone (issue 9): what the active knew survives a
crash of its node. A job is paused through the VIP after one of its runs was collected; the
active node is crashed as test_failover crashes one; on the survivor the job is still paused,
and that run's history and its output (`hasched runs logs`) are there.

Needs the replication of branch repl and the role's [replication] table (the default).
"""

from __future__ import annotations

import subprocess
import sys
import urllib.parse
from pathlib import Path

import pytest

from tests.lab import lab
from tests.lab.config import STATE_DIR, node

from .conftest import API, power_back_on, wait_for
from .test_failover import holder, started_on
from .test_promise import FINAL_STATES, _get, _install_job, _post, _secret

pytestmark = pytest.mark.lab

JOB = "replicated"
# A token of output nobody could produce by accident; a manual run only (the schedule is far).
MARK = "replicated-output-7f3a"
JOB_TOML = f"""\
[job.{JOB}]
description = "lab test: history and output that must survive the active node's crash"
command = ["/bin/sh", "-c", "echo {MARK}; echo {MARK}-err >&2"]
every = "24h"
agent = "node3"
timeout = "1m"
"""
HASCHED_CLI = str(Path(sys.executable).parent / "hasched")


def _job() -> dict | None:
    return _get(f"{API}/v1/jobs/{JOB}", _secret("hasched_api_token"))


def _run(run_id: str) -> dict | None:
    return _get(f"{API}/v1/runs/{urllib.parse.quote(run_id, safe='')}",
                _secret("hasched_api_token"))


def _logs(run_id: str, *extra: str) -> subprocess.CompletedProcess:
    """`hasched runs logs` through the VIP, as a user would ask it."""
    return subprocess.run([HASCHED_CLI, "runs", "logs", run_id, *extra, "--url", API,
                           "--token-file", str(STATE_DIR / "api.token")],
                          capture_output=True, text=True, timeout=60)


def test_a_crash_keeps_the_pause_the_history_and_the_output(cluster):
    victim = holder()
    assert victim in ("node1", "node2"), f"the scheduler runs nowhere ({victim})"
    survivor = "node2" if victim == "node1" else "node1"
    health = _get(f"{API}/health", _secret("hasched_api_token")) or {}
    assert (health.get("replication") or {}).get("mode") in ("sync", "async"), \
        f"the active scheduler does not replicate (needs branch repl): {health}"
    _install_job(True, job=JOB, toml=JOB_TOML)
    try:
        wait_for(f"the active scheduler to list {JOB}", _job, 60)
        status, answer = _post(f"{API}/v1/jobs/{JOB}/run", _secret("hasched_api_token"), {})
        assert status == 202, f"manual run of {JOB}: {status} {answer}"
        run_id = answer["run"]["run_id"]
        before = wait_for(f"{run_id} collected", lambda: (
            row := _run(run_id)) and row.get("state") in FINAL_STATES and row, 120)
        assert before["state"] == "succeeded", before
        assert _logs(run_id).stdout == f"{MARK}\n"
        status, answer = _post(f"{API}/v1/jobs/{JOB}/pause", _secret("hasched_api_token"), {})
        assert status == 200 and answer.get("paused") is True, (status, answer)

        lab.crash(node(victim))
        wait_for(f"the scheduler on {survivor}", lambda: started_on(survivor), 240)

        job = wait_for(f"{JOB} listed on {survivor}", _job, 60)
        assert job["paused"] is True, f"the pause did not survive the crash: {job}"
        after = _run(run_id)
        assert after is not None, f"{run_id} is not in {survivor}'s history"
        # The row as the old active recorded it (output_path is each node's own file).
        for field in ("nominal", "state", "attempt", "agent", "exit_code", "manual",
                      "scheduled_at", "dispatched_at", "started_at", "finished_at"):
            assert after.get(field) == before.get(field), (field, before, after)
        assert after["manual"] is True
        out, err = _logs(run_id), _logs(run_id, "--stderr")
        assert out.returncode == 0 and out.stdout == f"{MARK}\n", out
        assert err.returncode == 0 and err.stdout == f"{MARK}-err\n", err
    finally:
        _install_job(False, (survivor,), job=JOB)
        power_back_on(victim, survivor)
        _install_job(False, (victim,), job=JOB)
