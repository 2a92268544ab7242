"""Crash → an active scheduler answering on the VIP, in the container lab (root, `make lab` first).

    .venv/bin/python bench/failover.py [--crashes 6] [--baseline]

Each round crashes the node holding the VIP (pull the plug: its container killed, its link down,
as tests/cluster/test_failover.py does) and times, from the crash, the first /health on the VIP
that answers `"role": "active"` (polled every 0.2 s from the lab's client namespace), and, from
the survivor's pacemaker log, when its fencing of the crashed node and its promote were done.
Then the crashed node is powered on once the survivor is done with it (fenced, offline and
clean) and has rejoined, and the next round crashes the new holder, so the rounds alternate
between the nodes.
Prints every crash and median/max per crashed node, in the quorum mode the lab runs in.

--baseline: afterwards, the same rounds with the lab switched to the other quorum mode (one run
of site.yml with pacemaker_cluster_qdevice_host set or emptied), then switched back. No
assertions (the tests check behaviour; this prints figures).
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.cluster.conftest import (  # noqa: E402
    both_online,
    health,
    lab_qdevice_host,
    playbook,
    power_back_on,
    ssh,
    wait_for,
)
from tests.cluster.test_failover import holder  # noqa: E402
from tests.lab import lab, power  # noqa: E402
from tests.lab.bmc import join_netns  # noqa: E402
from tests.lab.config import CLIENT_NS, INVENTORY_DIR, QDEVICE_HOST, node  # noqa: E402


def _active() -> bool:
    # A short timeout: a request caught by the dead node's ARP entry must not hide the answer.
    return (health(timeout=0.5) or {}).get("role") == "active"


# In the survivor's journal (the containers share the host's clock): fencing done, promote done.
PHASES = {"fenced": "Operation 'off' targeting {victim} by .*: OK",
          "promoted": "Result of promote operation for hasched-scheduler on {survivor}: ok"}


def phases(victim: str, survivor: str, since: float) -> dict[str, float]:
    """Seconds from the crash to each phase, from the survivor's pacemaker log."""
    res = ssh(survivor, "journalctl", "--no-pager", "-o", "short-unix", "-u", "pacemaker",
              f"--since=@{since:.3f}", check=False)
    found: dict[str, float] = {}
    for name, pattern in PHASES.items():
        rx = re.compile(pattern.format(victim=victim, survivor=survivor))
        for line in res.stdout.splitlines():
            if rx.search(line):
                found[name] = float(line.split()[0]) - since
                break
    return found


def settled() -> bool:
    """Both scheduler instances up (one Promoted, one Unpromoted): a crash right after a rejoin
    would also time the rejoined node's start."""
    out = ssh("node1", "pcs", "status", "resources", check=False).stdout
    return bool(re.search(r"Promoted: \[ node[12] \]", out)
                and re.search(r"Unpromoted: \[ node[12] \]", out))


def crash_once() -> tuple[str, float, dict[str, float]]:
    wait_for("both scheduler instances running", settled, 180)
    victim = holder()
    if victim is None:
        raise SystemExit("bench: no node holds the VIP; is the lab provisioned (make lab)?")
    survivor = "node2" if victim == "node1" else "node1"
    wall, crashed = time.time(), time.monotonic()
    lab.crash(node(victim))
    wait_for("an active scheduler on the VIP", _active, 240, every=0.2)
    seconds = time.monotonic() - crashed
    found = phases(victim, survivor, wall)
    print(f"  crash of {victim}: active on the VIP after {seconds:.2f} s ("
          + ", ".join(f"{k} {v:.2f} s" for k, v in found.items()) + ")", flush=True)
    power_back_on(victim, survivor)
    wait_for("the scheduler active again", _active, 120)
    return victim, seconds, found


def rounds(n: int, label: str) -> dict[str, list[float]]:
    """Crash times per node, and per node and phase (key "node1 fenced", say)."""
    print(f"{label}: {n} crashes", flush=True)
    for name in ("node1", "node2"):  # a round cut short earlier may have left one off
        if not power.is_on(node(name)):
            power_back_on(name, "node2" if name == "node1" else "node1")
    wait_for("both nodes online", both_online, 240, every=3)
    times: dict[str, list[float]] = {"node1": [], "node2": []}
    for _ in range(n):
        victim, seconds, found = crash_once()
        times[victim].append(seconds)
        for phase, value in found.items():
            times.setdefault(f"{victim} {phase}", []).append(value)
    return times


def report(label: str, times: dict[str, list[float]]) -> None:
    for name, values in times.items():
        if values:
            print(f"{label:>9} crash of {name:<15} n={len(values)} "
                  f"median {statistics.median(values):.2f} s, max {max(values):.2f} s")
    every = times["node1"] + times["node2"]
    if every:
        print(f"{label:>9} all: n={len(every)} median {statistics.median(every):.2f} s, "
              f"max {max(every):.2f} s")


def _apply(qdevice_host: str) -> None:
    res = playbook("-e", json.dumps({"pacemaker_cluster_qdevice_host": qdevice_host}))
    if res.returncode != 0:
        raise SystemExit(f"bench: site.yml failed:\n{res.stdout[-3000:]}")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--crashes", type=int, default=6, help="crashes per mode (default 6)")
    p.add_argument("--baseline", action="store_true",
                   help="also measure the other quorum mode (qdevice / two-node), then switch back")
    args = p.parse_args()
    if not (INVENTORY_DIR / "hosts.yml").exists():  # `make bench` runs every script
        print("failover: the lab is not up (make lab, as root); nothing measured")
        return 0
    own = lab_qdevice_host()
    join_netns(CLIENT_NS)
    label = "qdevice" if own else "two-node"
    results = {label: rounds(args.crashes, label)}
    if args.baseline:
        other = "" if own else QDEVICE_HOST
        _apply(other)
        other_label = "qdevice" if other else "two-node"
        try:
            results[other_label] = rounds(args.crashes, other_label)
        finally:
            _apply(own)
    print("\ncrash -> active scheduler answering on the VIP; NODE fenced / promoted: crash -> the "
          "survivor's fencing / promote done (seconds)")
    for name, times in results.items():
        report(name, times)
    return 0


if __name__ == "__main__":
    sys.exit(main())
