"""Fencing through the lab BMCs, failover of VIP + scheduler, and the failback switch."""

from __future__ import annotations

import json
import re
import time

import pytest

from tests.lab import lab, power
from tests.lab.config import node

from .conftest import health, playbook, power_back_on, ssh, wait_for

pytestmark = pytest.mark.lab


def holder() -> str | None:
    """The node holding the VIP (in both layouts it runs with the active scheduler)."""
    for n in ("node1", "node2"):
        res = ssh(n, "crm_resource", "--locate", "--resource", "hasched-vip", check=False)
        m = re.search(r"is running on: (\S+)", res.stdout)
        if m:
            return m.group(1)
    return None


def started_on(name: str) -> bool:
    """The VIP is on `name` and the scheduler answering on it is the active one."""
    answer = health()
    return holder() == name and answer is not None and answer.get("role") == "active"


def test_fence_node2_through_its_bmc(cluster):
    ssh("node1", "pcs", "stonith", "fence", "node2", "--off")
    wait_for("node2 to be powered off by its BMC", lambda: not power.is_on(node("node2")), 120)
    power_back_on("node2", "node1")


def _crash_and_measure(victim: str, survivor: str) -> float:
    crashed = time.monotonic()
    lab.crash(node(victim))
    # With the victim's link down only the survivor can answer on the VIP: poll the API alone,
    # finely, for the figure; then check where the VIP and the active scheduler are.
    wait_for("an active scheduler answering on the VIP",
             lambda: (health(timeout=1) or {}).get("role") == "active", 240, every=0.2)
    seconds = time.monotonic() - crashed
    print(f"\nfailover: crash of {victim} -> scheduler answering on the VIP from {survivor}: "
          f"{seconds:.1f} s")
    wait_for(f"the scheduler on {survivor}", lambda: started_on(survivor), 60)
    return seconds


def _set_failback(value: bool) -> None:
    res = playbook("-e", json.dumps({"hasched_failback": value}))
    assert res.returncode == 0, res.stdout[-3000:]


def test_failover_and_failback_on(cluster):
    _set_failback(True)
    wait_for("the scheduler on node1, the preferred node", lambda: started_on("node1"), 180)
    _crash_and_measure("node1", "node2")
    power_back_on("node1", "node2")
    wait_for("the scheduler to fail back to node1", lambda: started_on("node1"), 180)


def test_failover_and_failback_off(cluster):
    _set_failback(False)
    wait_for("the scheduler on node1", lambda: started_on("node1"), 60)
    _crash_and_measure("node1", "node2")
    power_back_on("node1", "node2")
    time.sleep(20)  # give the cluster a chance to (wrongly) move it back
    assert holder() == "node2", "the scheduler failed back although hasched_failback is false"
    assert started_on("node2")
