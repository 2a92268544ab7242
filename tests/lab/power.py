"""Power for a node, shared by the CLI and the BMCs (callers hold state.locked())."""

from __future__ import annotations

from . import net, nodes
from .config import Node


def is_on(n: Node) -> bool:
    return nodes.leader_pid(n) is not None


def crash(n: Node) -> None:
    # Cut the link as well: a named namespace outlives its processes, and the dead node's
    # addresses (a VIP it held too) would keep answering ARP and ping.
    net.set_link(n, up=False)
    nodes.kill(n)
    st = nodes.state.load()
    if n.name not in st["crashed"]:
        st["crashed"].append(n.name)
    nodes.state.save(st)


def poweron(n: Node) -> None:
    if is_on(n):
        return
    _flush_vips(n)
    net.set_link(n, up=True)
    nodes.boot(n)
    st = nodes.state.load()
    st["crashed"] = [c for c in st["crashed"] if c != n.name]
    nodes.state.save(st)


def _flush_vips(n: Node) -> None:
    """A VIP the node held when it died is still on its eth0; a real power cycle would lose it."""
    out = net.in_ns(n.netns, "ip", "-o", "-4", "addr", "show", "dev", "eth0").stdout
    for line in out.splitlines():
        cidr = line.split()[3]
        if not cidr.startswith(n.ip + "/"):
            net.in_ns(n.netns, "ip", "addr", "del", cidr, "dev", "eth0", check=False)
