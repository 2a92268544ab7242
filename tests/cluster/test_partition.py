"""A split between the two cluster nodes, with fencing on: one side fences the other, the scheduler
ends up active on the survivor alone, and the agents refuse orders under the loser's epoch.

node1 wins: with the quorum device (the lab's default) qnetd's tie-breaker gives the lowest node
id the vote and node2 loses quorum, so only node1 fences; in two-node mode node1's fence device
waits (pacemaker_cluster_fence_delay_node), so node1 wins the fence race. The promoted scheduler
is moved to node2 first, so the loser is the node that was active: the survivor must promote
itself under a new epoch, and the old one is then stale on the agents. An agent learns an epoch
from the orders it gets, so the new active is made to send node3 one (a manual run of a job
pinned to node3) before the stale order is tried.
"""

from __future__ import annotations

import time
import urllib.parse

import pytest

from tests.lab import lab, power
from tests.lab.config import node

from .conftest import API, both_online, health, power_back_on, ssh, wait_for
from .test_failover import started_on
from .test_promise import AGENT_URL, _get, _install_job, _post, _secret

pytestmark = pytest.mark.lab

PROBE = "epoch-probe"
PROBE_TOML = f"""\
[job.{PROBE}]
description = "lab test: a manual run makes the active scheduler talk to node3"
command = ["/bin/true"]
every = "1d"
agent = "node3"
"""


def agent_epoch() -> int | None:
    answer = _get(f"{AGENT_URL}/v1/health", _secret("hasched_agent_token"))
    return None if answer is None else int(answer["epoch"])


def _stale_order(epoch: int) -> tuple[int, dict]:
    """What the loser would send node3: a new run under its (old) epoch."""
    return _post(f"{AGENT_URL}/v1/runs", _secret("hasched_agent_token"),
                 {"run_id": f"partition-probe@{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}",
                  "job": "partition-probe",
                  "attempt": 1, "epoch": epoch, "command": ["/bin/true"]})


def test_partition_fences_one_side_and_the_loser_epoch_is_refused(cluster):
    wait_for("both nodes online", both_online, 240, every=3)
    _install_job(True, job=PROBE, toml=PROBE_TOML)
    if not started_on("node2"):  # pcs refuses to move it where it already is
        ssh("node1", "pcs", "resource", "move", "hasched-scheduler-clone", "node2", "--promoted")
    wait_for("the scheduler promoted on node2", lambda: started_on("node2"), 180)
    before = health()["epoch"]

    lab.partition(node("node1"), node("node2"))
    try:
        wait_for("node2 (the losing side) to be powered off by its BMC",
                 lambda: not power.is_on(node("node2")), 180)
        assert power.is_on(node("node1")), "both sides were fenced"
        wait_for("the scheduler active on node1 alone", lambda: started_on("node1"), 180)
        after = health()["epoch"]
        assert after > before, f"node1 became active without a new epoch ({before} -> {after})"
        print(f"\npartition: epoch {before} -> {after}; node3's agent right after the "
              f"promotion has seen epoch {agent_epoch()}")
        status, answer = _post(f"{API}/v1/jobs/{urllib.parse.quote(PROBE)}/run",
                               _secret("hasched_api_token"), {})
        assert status == 202, f"manual run of {PROBE}: {status} {answer}"
        wait_for(f"node3's agent to see epoch {after}", lambda: (agent_epoch() or 0) >= after, 60)
        status, answer = _stale_order(before)
        assert status == 409, f"node3's agent accepted an order under the stale epoch " \
                              f"{before}: {status} {answer}"
    finally:
        lab.heal()
        _install_job(False, ("node1",), job=PROBE)
    power_back_on("node2", "node1")
    _install_job(False, ("node2",), job=PROBE)
    assert started_on("node1"), "the scheduler moved when node2 rejoined"
