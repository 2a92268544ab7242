"""The provisioned lab, checked from outside: packages, services, corosync, pcs, VIP, API."""

from __future__ import annotations

import re

import pytest

from .conftest import health, lab_qdevice_host, playbook, ssh

pytestmark = pytest.mark.lab
CLUSTER = ("node1", "node2")


@pytest.mark.parametrize("node", CLUSTER)
def test_cluster_packages_and_services(hosts, node):
    host = hosts[node]
    for pkg in ("pacemaker", "corosync", "pcs", "fence-agents", "resource-agents"):
        assert host.package(pkg).is_installed, f"{node}: {pkg} not installed"
    for svc in ("corosync", "pacemaker", "pcsd", "hasched-agent"):
        assert host.service(svc).is_enabled, f"{node}: {svc} not enabled"
        assert host.service(svc).is_running, f"{node}: {svc} not running"


def test_worker_runs_only_the_agent(hosts):
    host = hosts["node3"]
    assert host.service("hasched-agent").is_enabled
    assert host.service("hasched-agent").is_running
    assert not host.file("/etc/corosync/corosync.conf").exists, "node3 must not be in the cluster"
    assert oct(host.file("/etc/hasched/agent.token").mode) == "0o600"


@pytest.mark.parametrize("node", CLUSTER)
def test_corosync_conf(hosts, node):
    conf = hosts[node].file("/etc/corosync/corosync.conf").content_string
    if lab_qdevice_host():  # the lab's default: a quorum device on node3, no two_node
        assert re.search(rf"^\s*host:\s*{lab_qdevice_host()}\s*$", conf, re.M), "no qdevice"
        assert not re.search(r"^\s*two_node:", conf, re.M), "two_node with a quorum device"
    else:
        assert re.search(r"^\s*two_node:\s*1\s*$", conf, re.M), "two_node: 1 missing"
    assert re.search(r"^\s*token:\s*1000\s*$", conf, re.M), "token: 1000 missing"
    for name, ip in (("node1", "192.168.56.11"), ("node2", "192.168.56.12")):
        assert re.search(rf"ring0_addr:\s*{ip}\s+name:\s*{name}\b", conf), f"{name} not listed"


def test_pcs_status_nodes_fencing_resources(cluster):
    out = ssh("node1", "pcs", "status").stdout
    assert re.search(r"Online: \[ node1 node2 \]", out), out
    for dev in ("fence-node1", "fence-node2"):
        assert re.search(rf"{dev}\s+\(stonith:fence_ipmilan\):\s+Started", out), out
    assert re.search(r"hasched-vip\s+\(ocf:heartbeat:IPaddr2\):\s+Started", out), out
    # The default layout: a promotable clone, promoted on one node, a warm standby on the other.
    assert re.search(r"hasched-scheduler-clone \[hasched-scheduler\] \(promotable\)", out), out
    assert re.search(r"Promoted: \[ node[12] \]", out), out
    assert re.search(r"Unpromoted: \[ node[12] \]", out), out
    props = ssh("node1", "crm_attribute", "-t", "crm_config", "-n", "stonith-enabled",
                "-q", "-G").stdout
    assert props.strip() == "true"


def test_vip_serves_the_scheduler_api(cluster):
    answer = health()
    assert answer is not None, "no answer from the scheduler on the VIP"
    assert answer["role"] == "active"
    assert answer["jobs"] >= 1


def test_second_run_changes_nothing(cluster):
    res = playbook()
    assert res.returncode == 0, res.stdout[-3000:]
    recap = res.stdout[res.stdout.index("PLAY RECAP"):]
    counts = re.findall(r"changed=(\d+)", recap)
    assert counts and all(c == "0" for c in counts), recap
