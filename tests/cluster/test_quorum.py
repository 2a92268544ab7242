"""Quorum, both ways the pacemaker_cluster role keeps it.

With the quorum device (corosync-qnetd on node3): a split between the cluster nodes leaves exactly
one side quorate, the other stops its resources on its own, and the fence devices carry no delay.
In two-node mode (no device): corosync's two_node, node1's fence device waits (so node1 wins a
fence race), and a fence of node1 logs no "empty value in mapping" error.

Each test puts the lab in its mode with one run of site.yml and back into the mode the lab was
brought up in (HASCHED_LAB_QUORUM, in the inventory), so both run whichever mode that is.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterator

import pytest

from tests.lab import lab, power
from tests.lab.config import QDEVICE_HOST, node

from .conftest import both_online, lab_qdevice_host, playbook, power_back_on, ssh, wait_for

pytestmark = pytest.mark.lab

FENCED_ERROR = "pcmk_delay_base: empty value in mapping"


def _apply(qdevice_host: str) -> None:
    res = playbook("-e", json.dumps({"pacemaker_cluster_qdevice_host": qdevice_host}))
    assert res.returncode == 0, f"site.yml (qdevice host {qdevice_host!r}):\n{res.stdout[-4000:]}"
    wait_for("both nodes online", both_online, 240, every=3)


@pytest.fixture
def mode(cluster) -> Iterator[Callable[[str], None]]:
    """Switch the running lab's quorum mode for one test; put the lab's own back afterwards."""
    own = lab_qdevice_host()
    switched = []

    def switch(qdevice_host: str) -> None:
        if qdevice_host != own or switched:
            _apply(qdevice_host)
            switched.append(qdevice_host)

    yield switch
    if switched and switched[-1] != own:
        _apply(own)


def quorate(name: str) -> bool | None:
    res = ssh(name, "corosync-quorumtool", "-s", check=False)
    m = re.search(r"^Quorate:\s+(Yes|No)", res.stdout, re.M)
    return None if m is None else m.group(1) == "Yes"


def delay_of(device: str) -> str:
    res = ssh("node1", "crm_resource", "--resource", device, "--get-parameter",
              "pcmk_delay_base", check=False)
    return res.stdout.strip() if res.returncode == 0 else ""


def _corosync_conf() -> str:
    return ssh("node1", "cat", "/etc/corosync/corosync.conf").stdout


def _set_stonith(enabled: bool) -> None:
    ssh("node1", "pcs", "property", "set", f"stonith-enabled={str(enabled).lower()}")


def test_qdevice_split_leaves_exactly_one_side_quorate_and_no_delay(mode):
    mode(QDEVICE_HOST)
    conf = _corosync_conf()
    assert re.search(r"^\s*model:\s*net\s*$", conf, re.M), conf
    assert re.search(rf"^\s*host:\s*{QDEVICE_HOST}\s*$", conf, re.M), conf
    assert re.search(r"^\s*algorithm:\s*ffsplit\s*$", conf, re.M), conf
    assert not re.search(r"^\s*two_node:\s*1", conf, re.M), "two_node with a quorum device"
    assert delay_of("fence-node1") == "" and delay_of("fence-node2") == "", \
        "a fence delay with a quorum device"
    status = ssh("node1", "corosync-quorumtool", "-s").stdout
    assert re.search(r"^Total votes:\s+3\s*$", status, re.M), status
    # Fencing off while split, so both sides stay up to be asked: the device alone must keep the
    # loser out (with fencing on, test_partition shows the loser fenced).
    _set_stonith(False)
    try:
        lab.partition(node("node1"), node("node2"))
        try:
            wait_for("node1 quorate and node2 not (qnetd's tie-breaker: the lowest node id)",
                     lambda: quorate("node1") is True and quorate("node2") is False, 60)
            time.sleep(10)  # and it stays so: qnetd gives its vote to one side only
            assert (quorate("node1"), quorate("node2")) == (True, False)
        finally:
            lab.heal()
        wait_for("node2 to rejoin", both_online, 240, every=3)
    finally:
        _set_stonith(True)
    assert quorate("node1") and quorate("node2")


def test_two_node_mode_keeps_the_delay_and_fences_node1_without_an_error(mode):
    mode("")
    conf = _corosync_conf()
    assert re.search(r"^\s*two_node:\s*1\s*$", conf, re.M), conf
    assert "device {" not in conf, conf
    assert delay_of("fence-node1") == "node1:5s"
    assert delay_of("fence-node2") == ""
    since = ssh("node2", "date", "+%s").stdout.strip()
    ssh("node2", "pcs", "stonith", "fence", "node1", "--off")
    wait_for("node1 to be powered off by its BMC", lambda: not power.is_on(node("node1")), 120)
    log = ssh("node2", "journalctl", "--no-pager", "-o", "cat", f"--since=@{since}",
              "-u", "pacemaker").stdout
    assert re.search(r"Delaying 'off' action targeting node1 .*for 5s", log), log[-3000:]
    assert FENCED_ERROR not in log, [line for line in log.splitlines() if FENCED_ERROR in line]
    power_back_on("node1", "node2")
