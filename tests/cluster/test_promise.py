"""The product's promise on the real cluster: a crash of the scheduler's node loses no fire and
runs none twice.

A job fires every 10 s on the worker node3 and each run sleeps 15 s, so a run is always in
flight. The node holding the scheduler is crashed during one; the scheduler comes up on the other
node, collects that run's result, and node3's agent, the only witness that counts, holds each
nominal time exactly once with no gap from the first to the last.
"""

from __future__ import annotations

import json
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from datetime import UTC, datetime, timedelta

import pytest
import yaml

from tests.lab import lab
from tests.lab.config import STATE_DIR, node
from tests.lab.inventory import SSH_CONFIG

from .conftest import API, power_back_on, ssh, wait_for
from .test_failover import holder, started_on

pytestmark = pytest.mark.lab

JOB = "promise"
PERIOD = timedelta(seconds=10)
# run-all: every fire missed while no scheduler was up is caught up; allow: runs (15 s) overlap
# the period (10 s), so forbid would skip fires by design.
JOB_TOML = f"""\
[job.{JOB}]
description = "lab test: a run always in flight on node3"
command = ["/bin/sh", "-c", "sleep 15; date -u +%FT%TZ >> /var/tmp/{JOB}.log"]
every = "10s"
agent = "node3"
concurrency = "allow"
misfire = {{ policy = "run-all", grace = "10m" }}
timeout = "2m"
"""
HASCHED = "/opt/hasched/bin/hasched"
SCHED_CONFIG = "/etc/hasched/scheduler.toml"
AGENT_URL = "http://192.168.56.13:8481"
FINAL_STATES = ("succeeded", "failed", "timed-out", "cancelled", "lost")


def _secret(key: str) -> str:
    return yaml.safe_load((STATE_DIR / "secrets.yml").read_text())[key]


def _get(url: str, token: str) -> dict | None:
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return json.loads(resp.read())
    except (OSError, ValueError):
        return None


def agent_runs(since: str) -> list[dict] | None:
    """The agent's own records of the job's runs started since `since`."""
    answer = _get(f"{AGENT_URL}/v1/runs?since={urllib.parse.quote(since)}",
                  _secret("hasched_agent_token"))
    return None if answer is None else [r for r in answer["runs"] if r["job"] == JOB]


def _post(url: str, token: str, body: dict) -> tuple[int, dict]:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                 headers={"Authorization": f"Bearer {token}",
                                          "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


def ledger_run(run_id: str) -> dict | None:
    return _get(f"{API}/v1/runs/{urllib.parse.quote(run_id, safe='')}",
                _secret("hasched_api_token"))


def nominal(run: dict) -> datetime:
    return datetime.strptime(run["run_id"].split("@", 1)[1], "%Y-%m-%dT%H:%M:%SZ").replace(
        tzinfo=UTC)


def parse_iso(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _install_job(present: bool, nodes: tuple[str, ...] = ("node1", "node2"), job: str = JOB,
                 toml: str = JOB_TOML) -> None:
    """Write (or remove) a job file on cluster nodes and reload whatever daemon runs there."""
    path = f"/etc/hasched/jobs/{job}.toml"
    for name in nodes:
        if present:
            subprocess.run(["ssh", "-F", str(SSH_CONFIG), name, f"cat > {path}"],
                           input=toml, text=True, check=True, timeout=60)
        else:
            ssh(name, "rm", "-f", path)
        # 7: no daemon on this node (stopped): it reads the file when it starts.
        res = ssh(name, HASCHED, "ctl", "--config", SCHED_CONFIG, "reload", check=False)
        assert res.returncode in (0, 7), f"{name}: reload failed: {res.stdout}{res.stderr}"


def _in_flight(since: str) -> dict | None:
    """A run of the job that has been running for a few seconds and still has a while to go."""
    now = datetime.now(UTC)
    for run in agent_runs(since) or []:
        if run["state"] != "running" or not run.get("started_at"):  # claimed, not yet started
            continue
        age = (now - parse_iso(run["started_at"])).total_seconds()
        if run["state"] == "running" and 3 <= age <= 9:
            return run
    return None


def test_crash_loses_no_fire_and_runs_none_twice(cluster):
    since = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    victim = holder()
    assert victim in ("node1", "node2"), f"the scheduler runs nowhere ({victim})"
    survivor = "node2" if victim == "node1" else "node1"
    _install_job(True)
    try:
        wait_for("two runs of the job on node3", lambda: len(agent_runs(since) or []) >= 2, 120)
        in_flight = wait_for("a run in flight on node3", lambda: _in_flight(since), 60, 0.5)
        crashed = time.monotonic()
        crash_time = datetime.now(UTC)
        lab.crash(node(victim))
        wait_for(f"the scheduler on {survivor}", lambda: started_on(survivor), 240)
        print(f"\npromise: crash of {victim} -> scheduler answering on the VIP from {survivor}: "
              f"{time.monotonic() - crashed:.1f} s; in flight: {in_flight['run_id']}")

        def collected() -> dict | None:
            row = ledger_run(in_flight["run_id"])
            return row if row and row.get("state") in FINAL_STATES else None

        row = wait_for(f"{survivor}'s ledger to collect {in_flight['run_id']}", collected, 180)
        assert row["state"] == "succeeded", f"the in-flight run ended as {row}"

        # Enough fires after the crash that the catch-up is over and the new scheduler fires
        # on its own schedule, all finished.
        horizon = crash_time + timedelta(seconds=40)
        wait_for("fires 40 s past the crash on node3",
                 lambda: any(nominal(r) >= horizon for r in agent_runs(since) or []), 240)
        runs = agent_runs(since)
        assert runs, "node3's agent stopped answering"
        times = sorted(nominal(r) for r in runs)
        twice = sorted({t for t in times if times.count(t) > 1})
        assert not twice, f"fired twice on node3: {[t.isoformat() for t in twice]}"
        gaps = [(a.isoformat(), b.isoformat())
                for a, b in zip(times, times[1:], strict=False) if b - a != PERIOD]
        assert not gaps, f"fires missing between {gaps} (nominal times on node3: " \
                         f"{[t.strftime('%T') for t in times]})"
        print(f"promise: {len(times)} fires on node3 from {times[0]:%T} to {times[-1]:%T}, "
              "each once, none missing")
    finally:
        _install_job(False, (survivor,))
        power_back_on(victim, survivor)
        _install_job(False, (victim,))
