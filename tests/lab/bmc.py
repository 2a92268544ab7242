"""The lab's BMCs: one IPMI (lanplus) endpoint per node, all served by one process.

It runs in the BMC namespace (192.168.56.1 on the lab bridge), a UDP port per node, so
`fence_ipmilan --lanplus -a 192.168.56.1 -u PORT` works from the nodes exactly as against real
hardware. Power off is the lab's crash (container killed, link cut); power on boots the node.
The lab starts it as `python -m tests.lab.bmc` in the host's namespaces; it joins the BMC's
network namespace itself (setns) rather than under `ip netns exec`, whose private mount namespace
remounts /sys without the cgroup tree that systemd-nspawn needs to boot a node on power on.
"""

from __future__ import annotations

import ctypes
import os
import sys

import pyghmi.ipmi.bmc as ipmi_bmc

from . import power, secrets, state
from .config import BMC_NS, BMC_USER, NODES, Node

CLONE_NEWNET = 0x40000000


class NodeBmc(ipmi_bmc.Bmc):
    def __init__(self, node: Node, password: str) -> None:
        super().__init__({BMC_USER: password}, port=node.bmc_port)
        self.node = node

    def get_power_state(self) -> str:
        with state.locked():
            return "on" if power.is_on(self.node) else "off"

    def power_off(self) -> None:
        log(f"{self.node.name}: power off")
        with state.locked():
            power.crash(self.node)

    def power_on(self) -> None:
        log(f"{self.node.name}: power on")
        with state.locked():
            power.poweron(self.node)

    def power_reset(self) -> None:
        log(f"{self.node.name}: reset")
        with state.locked():
            power.crash(self.node)
            power.poweron(self.node)

    def power_cycle(self) -> None:
        self.power_reset()

    def power_shutdown(self) -> None:
        self.power_off()

    def is_active(self) -> bool:
        return power.is_on(self.node)


def log(msg: str) -> None:
    print(f"bmc: {msg}", file=sys.stderr, flush=True)


def join_netns(name: str) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(f"/run/netns/{name}", os.O_RDONLY)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), f"setns {name}")
    finally:
        os.close(fd)


def main() -> None:
    join_netns(BMC_NS)
    password = secrets.load()["pacemaker_cluster_ipmi_password"]
    for node in NODES:
        NodeBmc(node, password)
        log(f"{node.name}: listening on port {node.bmc_port}")
    ipmi_bmc.Bmc.listen(timeout=30)


if __name__ == "__main__":
    main()
