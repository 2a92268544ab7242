"""Job files deployed by site.yml: a good one reaches the running schedulers without a restart, a
bad one stops the play with the validator's message and reaches no node."""

from __future__ import annotations

import json
import urllib.parse

import pytest

from .conftest import API, playbook, ssh, wait_for
from .test_badinput import _stopped_early
from .test_promise import HASCHED, SCHED_CONFIG, _get, _secret

pytestmark = pytest.mark.lab

CLUSTER = ("node1", "node2")


def _daemon_pids() -> dict[str, str]:
    # One remote shell line: ssh joins its arguments, so the pattern needs its own quotes.
    return {n: ssh(n, "pgrep -o -f 'hasched scheduler run'").stdout.strip() for n in CLUSTER}


def _job_counts() -> dict[str, int]:
    return {n: json.loads(ssh(n, HASCHED, "ctl", "--config", SCHED_CONFIG, "status").stdout)["jobs"]
            for n in CLUSTER}


def _job(name: str) -> dict | None:
    return _get(f"{API}/v1/jobs/{urllib.parse.quote(name)}", _secret("hasched_api_token"))


def test_a_new_job_reaches_the_running_schedulers_without_a_restart(cluster):
    name = "lab-added"
    toml = f'[job.{name}]\ncommand = ["/bin/true"]\nevery = "1h"\npool = "linux"\n'
    before, counts = _daemon_pids(), _job_counts()
    try:
        res = playbook("-e", json.dumps({"hasched_jobs": {name: toml}}))
        assert res.returncode == 0, res.stdout[-3000:]
        assert "RUNNING HANDLER [hasched : Reload the scheduler's jobs]" in res.stdout
        wait_for(f"the active scheduler to list {name}", lambda: _job(name), 60)
        # The standby re-read it too: it must be current when it is promoted.
        assert _job_counts() == {n: c + 1 for n, c in counts.items()}
        assert _daemon_pids() == before, "a scheduler was restarted to take a job change"
    finally:
        for n in CLUSTER:
            ssh(n, "rm", "-f", f"/etc/hasched/jobs/{name}.toml")
            ssh(n, HASCHED, "ctl", "--config", SCHED_CONFIG, "reload", check=False)


def test_a_bad_job_file_stops_the_play_and_reaches_no_node(cluster):
    name = "lab-broken"
    toml = f'[job.{name}]\ncommand = ["/bin/true"]\nschedule = "61 * * * *"\npool = "linux"\n'
    res = playbook("-e", json.dumps({"hasched_jobs": {name: toml}}))
    _stopped_early(res, "schedule: bad cron expression '61 * * * *'")
    for n in CLUSTER:
        assert ssh(n, "test", "-e", f"/etc/hasched/jobs/{name}.toml", check=False).returncode \
            == 1, f"{n}: the bad job file was installed"
