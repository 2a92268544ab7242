"""The lab network: a switch namespace with a bridge, one cable (veth) per node, client and BMC.

A partition between A and B is a blackhole route to B in A's namespace and to A in B's: IP
traffic between the two (corosync's knet, pcsd) is silently dropped while both still reach every
other lab host. (tc actions and bridge VLAN filtering are not available in this kernel; a route
needs neither, and the namespace - hence the route - outlives a node's power cycle.)
"""

from __future__ import annotations

import subprocess

from . import state
from .config import (
    BMC_IP,
    BMC_NS,
    BRIDGE,
    CLIENT_IP,
    CLIENT_NS,
    NETMASK,
    NODES,
    PREFIX,
    SWITCH_NS,
    Node,
)


def sh(*cmd: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(list(cmd), check=check, capture_output=True, text=True)


def in_ns(ns: str, *cmd: str, check: bool = True) -> subprocess.CompletedProcess:
    return sh("ip", "netns", "exec", ns, *cmd, check=check)


def existing_namespaces() -> list[str]:
    out = sh("ip", "netns", "list").stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def add_ns(name: str) -> None:
    state.record("netns", name)
    if name not in existing_namespaces():
        sh("ip", "netns", "add", name)
    in_ns(name, "ip", "link", "set", "lo", "up")


def _cable(ns: str, port: str, ip: str, mac: str | None = None) -> None:
    """A veth from the switch's bridge to `ns`, where it is eth0 with `ip`."""
    if in_ns(SWITCH_NS, "ip", "link", "show", port, check=False).returncode == 0:
        return
    inner = f"{PREFIX}i-{ns[-5:]}"
    in_ns(SWITCH_NS, "ip", "link", "add", port, "type", "veth", "peer", "name", inner)
    in_ns(SWITCH_NS, "ip", "link", "set", inner, "netns", ns)
    in_ns(ns, "ip", "link", "set", inner, "name", "eth0")
    if mac:
        in_ns(ns, "ip", "link", "set", "eth0", "address", mac)
    in_ns(ns, "ip", "addr", "add", f"{ip}/{NETMASK}", "dev", "eth0")
    in_ns(ns, "ip", "link", "set", "eth0", "up")
    in_ns(SWITCH_NS, "ip", "link", "set", port, "master", BRIDGE)
    in_ns(SWITCH_NS, "ip", "link", "set", port, "up")


def build() -> None:
    add_ns(SWITCH_NS)
    if in_ns(SWITCH_NS, "ip", "link", "show", BRIDGE, check=False).returncode != 0:
        in_ns(SWITCH_NS, "ip", "link", "add", BRIDGE, "type", "bridge")
    in_ns(SWITCH_NS, "ip", "link", "set", BRIDGE, "up")
    for ns, port, ip in ((CLIENT_NS, f"{PREFIX}p-client", CLIENT_IP),
                         (BMC_NS, f"{PREFIX}p-bmc", BMC_IP)):
        add_ns(ns)
        _cable(ns, port, ip)
    for n in NODES:
        add_ns(n.netns)
        _cable(n.netns, n.port_veth, n.ip, n.mac)
        if n.cluster:
            # What the hasched role sets on real hosts (a scheduler binds the VIP where it is
            # absent); inside a container /proc/sys is read-only, so the lab sets it here.
            in_ns(n.netns, "sysctl", "-qw", "net.ipv4.ip_nonlocal_bind=1")


def set_link(n: Node, up: bool) -> None:
    in_ns(SWITCH_NS, "ip", "link", "set", n.port_veth, "up" if up else "down")


def partition(a: Node, b: Node) -> None:
    for src, dst in ((a, b), (b, a)):
        in_ns(src.netns, "ip", "route", "replace", "blackhole", f"{dst.ip}/32")


def heal() -> None:
    for n in NODES:
        routes = in_ns(n.netns, "ip", "-o", "route", "show", "type", "blackhole").stdout
        for line in routes.splitlines():
            in_ns(n.netns, "ip", "route", "del", *line.split(), check=False)


def teardown(namespaces: list[str]) -> None:
    """Delete the namespaces; their veths go with them (deleting one end removes the pair)."""
    names = set(namespaces) | {ns for ns in existing_namespaces() if ns.startswith(PREFIX + "-")}
    for ns in sorted(names):
        sh("ip", "netns", "pids", ns, check=False)
        sh("ip", "netns", "delete", ns, check=False)
