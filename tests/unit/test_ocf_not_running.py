"""The OCF agent's promote and demote of an instance that is not running: 7, as
ocf:pacemaker:Stateful answers (it was 1, a failure Pacemaker would recover from). No
Pacemaker needed: these actions look at the PID file first."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

AGENT = Path(__file__).resolve().parents[2] / "resource-agents" / "hasched" / "scheduler"


@pytest.mark.parametrize("action", ["promote", "demote"])
def test_promote_and_demote_of_a_stopped_instance_are_not_running(tmp_path, action):
    env = {**os.environ, "OCF_ROOT": str(tmp_path), "HA_LOGFILE": "/dev/null",
           "OCF_RESKEY_config": str(tmp_path / "scheduler.toml"),
           "OCF_RESKEY_pidfile": str(tmp_path / "absent.pid"),
           "PYTHONPATH": str(AGENT.parents[1])}
    r = subprocess.run([sys.executable, str(AGENT), action], env=env, capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 7, r
    assert f"ocf-exit-reason:cannot {action}: daemon not running" in r.stderr
