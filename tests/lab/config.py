"""The lab's fixed layout: nodes, addresses, namespaces, paths.

Addresses mirror Vagrant's host-only network (192.168.56.0/24) so the same inventory shape serves
both labs. Nothing in this network is routed anywhere: only lab namespaces see it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

STATE_DIR = Path("/var/lib/hasched-lab")
CACHE_DIR = Path("/var/cache/hasched-lab")
REPO_ROOT = Path(__file__).resolve().parents[2]
WHEELHOUSE = CACHE_DIR / "wheelhouse"
INVENTORY_DIR = REPO_ROOT / "ansible" / "inventories" / "lab"

PREFIX = "hlab"  # every namespace, veth and bridge name starts with it, so `down` finds strays
SWITCH_NS = f"{PREFIX}-switch"
CLIENT_NS = f"{PREFIX}-client"
BMC_NS = f"{PREFIX}-bmc"
BRIDGE = "br0"
NETMASK = 24
CLIENT_IP = "192.168.56.2"
BMC_IP = "192.168.56.1"
VIP = "192.168.56.100"
BMC_USER = "admin"
SUITE = "bookworm"

# The packages every node carries. The cache key of the root file system is a hash of this list.
BASE_INCLUDE = ["systemd", "systemd-sysv", "dbus", "iproute2", "python3"]
CHROOT_PACKAGES = [
    "pacemaker", "corosync", "pcs", "resource-agents", "fence-agents", "ipmitool",
    "openssh-server", "sudo", "python3-venv", "python3-pip", "python3-apt", "iputils-ping",
    "procps", "pacemaker-cli-utils", "libxml2-utils", "curl", "less",
    # the quorum device: qdevice on the cluster nodes, qnetd on node3 (one root for every node)
    "corosync-qdevice", "corosync-qnetd",
]


class LabError(Exception):
    """A problem the user can fix; printed as one line."""


# How the two-node cluster keeps quorum, chosen at `up` (written into the inventory):
# "qdevice" (default): corosync-qnetd on node3, the worker, decides a split (no fence delay);
# "two-node": corosync's two_node mode, node1's fence device waits so node1 wins a fence race.
QUORUM_ENV = "HASCHED_LAB_QUORUM"
QUORUM_MODES = ("qdevice", "two-node")
QDEVICE_HOST = "node3"


def quorum_mode() -> str:
    mode = os.environ.get(QUORUM_ENV, QUORUM_MODES[0])
    if mode not in QUORUM_MODES:
        raise LabError(f"{QUORUM_ENV}={mode!r}: must be one of {', '.join(QUORUM_MODES)}")
    return mode


@dataclass(frozen=True)
class Node:
    name: str
    ip: str
    bmc_port: int
    cluster: bool

    @property
    def netns(self) -> str:
        return f"{PREFIX}-{self.name}"

    @property
    def port_veth(self) -> str:
        """The switch-side end of the node's cable (the node side is eth0 in its namespace)."""
        return f"{PREFIX}p-{self.name}"

    @property
    def mac(self) -> str:
        # Fixed MACs let `partition` filter frames by destination without asking the node.
        return f"02:56:00:00:00:{int(self.ip.rsplit('.', 1)[1]):02x}"


NODES = [
    Node("node1", "192.168.56.11", 6231, True),
    Node("node2", "192.168.56.12", 6232, True),
    Node("node3", "192.168.56.13", 6233, False),
]


def node(name: str) -> Node:
    for n in NODES:
        if n.name == name:
            return n
    raise KeyError(name)
