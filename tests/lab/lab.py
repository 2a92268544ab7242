"""The lab's verbs: up, down, crash, poweron, partition, heal, status."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests import deps

from . import inventory, net, nodes, power, rootfs, secrets, state
from .config import (
    CLIENT_NS,
    NODES,
    REPO_ROOT,
    STATE_DIR,
    WHEELHOUSE,
    LabError,
    Node,
    quorum_mode,
)

REQUIRED = ["debootstrap", "systemd-nspawn", "ip", "tc", "ssh", "ssh-keygen", "nsenter", "mount"]


def log(msg: str) -> None:
    print(f"lab: {msg}", file=sys.stderr, flush=True)


def preflight() -> None:
    if os.geteuid() != 0:
        raise LabError("the lab needs root (network namespaces, mounts, systemd-nspawn)")
    missing = [c for c in REQUIRED if deps.which(c) is None]
    if missing:
        raise LabError("; ".join(deps.missing_message(c) for c in missing))


def up(timeout: float = 300) -> None:
    preflight()
    quorum_mode()  # a bad HASCHED_LAB_QUORUM stops here, before anything is built
    with state.locked():
        secrets.write_api_token(secrets.load())
        key = secrets.ssh_key()
        lower = rootfs.extract(log)
        log("network")
        net.build()
        pubkey = Path(str(key) + ".pub").read_text()
        for n in NODES:
            nodes.mount_overlay(n, lower)
            nodes.prepare(n, pubkey)
        inventory.write(key)
        for n in NODES:
            if n.name not in state.load()["crashed"]:
                log(f"boot {n.name}")
                nodes.boot(n)
        _start_bmc()
    build_wheelhouse()
    _wait_ssh(key, timeout)
    log(f"up; inventory {inventory.INVENTORY_DIR / 'hosts.yml'}")


def build_wheelhouse() -> None:
    """hasched and its dependencies as wheels, for the hasched role (the lab has no internet).

    Built here, in the host's namespace where PyPI is reachable; the dependencies stay cached,
    the hasched wheel is rebuilt on every `up` so the lab always runs the working tree's code.
    """
    WHEELHOUSE.mkdir(parents=True, exist_ok=True)
    for old in WHEELHOUSE.glob("hasched-*.whl"):
        old.unlink()
    log("wheelhouse")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--disable-pip-version-check",
                    "--wheel-dir", str(WHEELHOUSE), "--find-links", str(WHEELHOUSE),
                    str(REPO_ROOT)], check=True)


def _start_bmc() -> None:
    pid = state.load()["pids"].get("bmc")
    if pid and Path(f"/proc/{pid}").exists():
        return
    logf = open(STATE_DIR / "bmc.log", "ab")  # noqa: SIM115 - handed to the child
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.lab.bmc"],
        cwd=REPO_ROOT, stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT,
        start_new_session=True)
    logf.close()
    state.set_pid("bmc", proc.pid)


def ssh_argv(name: str, *cmd: str) -> list[str]:
    return ["ip", "netns", "exec", CLIENT_NS, "ssh", "-F", str(inventory.SSH_CONFIG), name, *cmd]


def _wait_ssh(key: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    pending = [n for n in NODES if power.is_on(n)]
    while pending:
        n = pending[0]
        res = subprocess.run(ssh_argv(n.name, "systemctl", "is-system-running", "--wait"),
                             capture_output=True, text=True)
        if res.returncode == 0 or res.stdout.strip() == "degraded":
            log(f"{n.name} booted ({res.stdout.strip()})")
            pending.pop(0)
            continue
        if time.monotonic() > deadline:
            raise LabError(f"{n.name} did not answer ssh within {timeout:.0f}s "
                           f"(console: {nodes.node_dir(n) / 'console.log'}): {res.stderr.strip()}")
        time.sleep(2)


def down() -> None:
    with state.locked():
        st = state.load()
        bmc = st["pids"].get("bmc")
        if bmc:
            try:
                os.killpg(bmc, signal.SIGTERM)
            except ProcessLookupError:
                pass
        for n in NODES:
            nodes.kill(n)
        _kill_strays()
        for mount in st["mounts"] + [str(nodes.root_of(n)) for n in NODES]:
            nodes.unmount(mount)
        net.teardown(st["netns"])
        shutil.rmtree(STATE_DIR / "nodes", ignore_errors=True)
        shutil.rmtree(secrets.SSH_DIR, ignore_errors=True)
        secrets.SECRETS_FILE.unlink(missing_ok=True)
        (STATE_DIR / "api.token").unlink(missing_ok=True)
        inventory.remove()
        state.clear()
    log("down")


def _kill_strays() -> None:
    """nspawn processes on our node roots that the state file lost track of."""
    marker = str(STATE_DIR / "nodes").encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if cmdline.startswith(b"systemd-nspawn") and marker in cmdline:
            pid = int(entry.name)
            for victim in nodes._children(pid) + [pid]:
                try:
                    os.kill(victim, signal.SIGKILL)
                except ProcessLookupError:
                    pass
    time.sleep(0.5)


def crash(n: Node) -> None:
    with state.locked():
        power.crash(n)


def poweron(n: Node) -> None:
    with state.locked():
        power.poweron(n)


def partition(a: Node, b: Node) -> None:
    with state.locked():
        net.partition(a, b)
        st = state.load()
        st["partitions"].append([a.name, b.name])
        state.save(st)


def heal() -> None:
    with state.locked():
        net.heal()
        st = state.load()
        st["partitions"] = []
        state.save(st)


def status() -> str:
    st = state.load()
    if not st["netns"]:
        return "lab is down"
    lines = []
    for n in NODES:
        role = "cluster" if n.cluster else "worker"
        lines.append(f"{n.name} {n.ip} {role} power={'on' if power.is_on(n) else 'off'} "
                     f"bmc=192.168.56.1:{n.bmc_port}")
    bmc = st["pids"].get("bmc")
    alive = bool(bmc) and Path(f"/proc/{bmc}").exists()
    lines.append(f"bmc pid={bmc} {'running' if alive else 'NOT running'}")
    lines.append(f"partitions: {st['partitions'] or 'none'}")
    lines.append(f"client namespace: {CLIENT_NS}")
    return "\n".join(lines)
