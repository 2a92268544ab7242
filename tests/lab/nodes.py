"""Node containers: an overlay root per node, booted with systemd-nspawn in the node's namespace.

The overlay's upper dir is the node's "disk": it survives crash and power-on, and goes with `down`.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
import uuid
from pathlib import Path

from . import state
from .config import NODES, STATE_DIR, LabError, Node
from .net import sh


def node_dir(n: Node) -> Path:
    return STATE_DIR / "nodes" / n.name


def root_of(n: Node) -> Path:
    return node_dir(n) / "root"


def mount_overlay(n: Node, lower: Path) -> None:
    base = node_dir(n)
    for sub in ("upper", "work", "root"):
        (base / sub).mkdir(parents=True, exist_ok=True)
    root = root_of(n)
    state.record("mounts", str(root))
    if not os.path.ismount(root):
        sh("mount", "-t", "overlay", "overlay", "-o",
           f"lowerdir={lower},upperdir={base / 'upper'},workdir={base / 'work'}", str(root))


def prepare(n: Node, pubkey: str) -> None:
    """Give the node its identity: hostname, hosts, machine id, SSH host key and root's key."""
    root = root_of(n)
    (root / "etc/hostname").write_text(n.name + "\n")
    hosts = ["127.0.0.1 localhost", "::1 localhost ip6-localhost ip6-loopback"]
    hosts += [f"{m.ip} {m.name}" for m in NODES]
    (root / "etc/hosts").write_text("\n".join(hosts) + "\n")
    (root / "etc/machine-id").write_text(uuid.uuid4().hex + "\n")
    key = root / "etc/ssh/ssh_host_ed25519_key"
    if not key.exists():
        sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", n.name, "-f", str(key))
    ssh_dir = root / "root/.ssh"
    ssh_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    (ssh_dir / "authorized_keys").write_text(pubkey)
    os.chmod(ssh_dir / "authorized_keys", 0o600)


def host_key(n: Node) -> list[str]:
    return (root_of(n) / "etc/ssh/ssh_host_ed25519_key.pub").read_text().split()[:2]


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def leader_pid(n: Node) -> int | None:
    pid = state.load()["pids"].get(n.name)
    return pid if pid and _alive(pid) and _cmdline_has(pid, str(root_of(n))) else None


def _cmdline_has(pid: int, text: str) -> bool:
    try:
        return text.encode() in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def _children(pid: int) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            if ppid == pid:
                out.append(int(entry.name))
    return out


def boot(n: Node) -> int:
    """Start the node's systemd in its own session (it must outlive whoever started it)."""
    if (pid := leader_pid(n)) is not None:
        return pid
    console = node_dir(n) / "console.log"
    log = open(console, "ab")  # noqa: SIM115 - handed to the child
    said_before = log.tell()
    proc = subprocess.Popen(
        ["systemd-nspawn", "-D", str(root_of(n)), "-b", "-M", n.name, "--register=no",
         "--keep-unit", "--capability=CAP_NET_ADMIN",
         f"--network-namespace-path=/run/netns/{n.netns}"],
        stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    log.close()
    try:
        # nspawn refuses at once what it cannot do (e.g. from a mount namespace without
        # /sys/fs/cgroup, as under `ip netns exec`): say so instead of leaving a node "off".
        code = proc.wait(timeout=1.5)
    except subprocess.TimeoutExpired:
        pass
    else:
        with open(console, "rb") as fh:
            fh.seek(said_before)
            said = " ".join(fh.read().decode(errors="replace").split())
        raise LabError(f"{n.name}: systemd-nspawn exited at once ({code}): {said or 'no output'}")
    # A long-lived caller (the BMC) must reap it; a short one exits and leaves it to init.
    threading.Thread(target=proc.wait, daemon=True).start()
    state.set_pid(n.name, proc.pid)
    return proc.pid


def kill(n: Node) -> None:
    """Pull the plug: SIGKILL the container init (takes its PID namespace) and nspawn."""
    pid = leader_pid(n)
    if pid is None:
        return
    victims = _children(pid) + [pid]
    for victim in victims:
        try:
            os.kill(victim, signal.SIGKILL)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + 30
    while any(_alive(v) for v in victims) and time.monotonic() < deadline:
        time.sleep(0.1)
    state.set_pid(n.name, None)


def container_init(n: Node) -> int | None:
    pid = leader_pid(n)
    kids = _children(pid) if pid else []
    return kids[0] if kids else None


def run_in(n: Node, *cmd: str, check: bool = True) -> subprocess.CompletedProcess:
    """Run a command inside a node (all its namespaces); for the lab's own checks, not for users."""
    init = container_init(n)
    if init is None:
        raise RuntimeError(f"{n.name} is not running")
    return subprocess.run(["nsenter", "-t", str(init), "-a", *cmd], check=check,
                          capture_output=True, text=True)


def unmount(path: str) -> None:
    if os.path.ismount(path):
        sh("umount", path, check=False)
        if os.path.ismount(path):
            sh("umount", "-l", path, check=False)
