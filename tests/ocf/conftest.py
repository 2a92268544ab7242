"""Fixtures for the OCF agent tests: scheduler setups, the installed agent, a real Pacemaker.

Everything lives under /tmp/hasched-ocf-*; every daemon a test starts is killed at teardown.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import pytest

from tests import deps
from tests.ports import free_port

REPO = Path(__file__).resolve().parents[2]
AGENT_SRC = REPO / "resource-agents"
PYTHON = sys.executable
HASCHED = str(Path(sys.executable).parent / "hasched")
SYSTEM_OCF_ROOT = Path("/usr/lib/ocf")
PACEMAKER_LOCK = "/run/hasched-test-pacemaker.lock"
BASE_PATH = deps.SYSTEM_PATH  # where Debian puts programs, root's sbin included


def need_root() -> None:
    deps.need_root("OCF tests run Pacemaker and write /run and /usr/lib/ocf")
    deps.need("pacemakerd", "corosync", "pcs", "crm_resource", "crm_attribute", "ocf-tester",
              "xmllint")
    need_reachable_checkout()


def need_reachable_checkout() -> None:
    """Fail at once when other users cannot reach the checkout's venv and code.

    The installed agent's shebang points into this venv, whose package is this checkout (an
    editable install); Pacemaker's controller reads the agent's meta-data as hacluster, and
    `user=` runs the daemon as another account. Under a 0700 directory such as /root they get
    "Permission denied", and the failures would say so only indirectly.
    """
    for parent in [REPO, *REPO.parents]:
        if not parent.stat().st_mode & 0o001:
            pytest.fail(f"{parent} is not traversable by other users (mode "
                        f"{parent.stat().st_mode & 0o777:o}), so hacluster cannot run the OCF "
                        f"agent from {REPO}: clone outside it (e.g. under /srv) or chmod o+x "
                        f"{parent}")


def wait_for(what: str, predicate, timeout: float = 60.0, interval: float = 0.3):
    """Poll `predicate` until it returns something truthy; fail naming `what` at the deadline."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout:.0f}s waiting for {what} (last: {last!r})")


def sh(*argv: str, timeout: float = 120, check: bool = False) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": BASE_PATH + ":" + os.environ.get("PATH", "")}
    done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env)
    if check and done.returncode != 0:
        pytest.fail(f"{' '.join(argv)} -> {done.returncode}: {done.stdout}{done.stderr}")
    return done


def promotion_score(resource: str, node: str = "node1") -> int | None:
    """The promotion score the agent set for `resource` on `node`, as Pacemaker records it."""
    done = sh("crm_attribute", f"--promotion={resource}", "--node", node, "--query", "--quiet")
    out = done.stdout.strip()
    return int(out) if done.returncode == 0 and out.lstrip("-").isdigit() else None


def install_agent(ocf_root: Path) -> Path:
    sh(str(AGENT_SRC / "install.sh"), "--python", PYTHON, "--ocf-root", str(ocf_root), check=True)
    return ocf_root / "resource.d" / "hasched" / "scheduler"


def start_ticks(pid: int) -> int:
    """The process's start time in clock ticks since boot, as the agent's PID file records it."""
    with open(f"/proc/{pid}/stat", "rb") as f:
        stat = f.read()
    return int(stat[stat.rfind(b")") + 2:].split()[19])


def daemons_of(config: Path) -> list[psutil.Process]:
    """Live scheduler daemons whose command line names `config`."""
    found = []
    for proc in psutil.process_iter(["cmdline", "status"]):
        cmd = proc.info["cmdline"] or []
        if str(config) in cmd and "run" in cmd and proc.info["status"] != psutil.STATUS_ZOMBIE:
            found.append(proc)
    return found


def kill_daemons_of(config: Path) -> None:
    for proc in daemons_of(config):
        for sig in (signal.SIGKILL, signal.SIGCONT):
            try:
                proc.send_signal(sig)
            except psutil.Error:
                pass


class Setup:
    """A scheduler.toml (zero agents, no jobs) and its directories, plus the agent's OCF env."""

    def __init__(self, host: str = "127.0.0.1", instance: str = "jobs") -> None:
        self.root = Path(tempfile.mkdtemp(prefix="hasched-ocf-", dir="/tmp"))
        self.host, self.port, self.instance = host, free_port(), instance
        for sub in ("jobs", "state", "run"):
            (self.root / sub).mkdir()
        self.tokens = self.root / "api-tokens"
        self.tokens.write_text("ocf-test-token-0123456789abcdef0123456789\n")
        self.tokens.chmod(0o600)
        self.config = self.root / "scheduler.toml"
        self.config.write_text(
            "[scheduler]\n"
            f'listen = "{host}:{self.port}"\n'
            f'state_dir = "{self.root}/state"\n'
            f'run_dir = "{self.root}/run"\n'
            f'jobs_dir = "{self.root}/jobs"\n'
            f'api_tokens_file = "{self.tokens}"\n'
        )
        self.socket = self.root / "run" / "control.sock"
        self.pidfile = self.root / "scheduler.pid"
        self.log_file = self.root / "log" / "scheduler.log"

    def params(self) -> dict[str, str]:
        return {"config": str(self.config), "pidfile": str(self.pidfile),
                "log_file": str(self.log_file)}

    def env(self, params: dict[str, str] | None = None, **meta: str) -> dict[str, str]:
        """OCF environment as pacemaker-execd builds it (no HA_LOGFACILITY: stderr logging)."""
        env = {"PATH": BASE_PATH, "OCF_ROOT": str(SYSTEM_OCF_ROOT), "OCF_RA_VERSION_MAJOR": "1",
               "OCF_RA_VERSION_MINOR": "1", "OCF_RESOURCE_INSTANCE": self.instance,
               "OCF_RESOURCE_TYPE": "scheduler", "OCF_RESOURCE_PROVIDER": "hasched",
               "HA_debug": "0"}
        for key, value in (self.params() if params is None else params).items():
            env[f"OCF_RESKEY_{key}"] = value
        for key, value in meta.items():
            env[f"OCF_RESKEY_CRM_meta_{key}"] = value
        return env

    def ask(self, request: str) -> dict:
        import json

        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(10)
            s.connect(str(self.socket))
            s.sendall(request.encode() + b"\n")
            return json.loads(s.makefile().readline())

    def cleanup(self) -> None:
        kill_daemons_of(self.config)
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture
def setup():
    need_root()
    s = Setup()
    yield s
    s.cleanup()


@pytest.fixture(scope="session")
def agent(tmp_path_factory) -> Path:
    """The agent installed by install.sh into a private OCF root (shebang `-IS`, as in use)."""
    need_root()
    root = Path(tempfile.mkdtemp(prefix="hasched-ocf-root-", dir="/tmp"))
    yield install_agent(root)
    shutil.rmtree(root, ignore_errors=True)


def run_agent(agent: Path, action: str, env: dict[str, str],
              timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([str(agent), action], env=env, capture_output=True, text=True,
                          timeout=timeout, cwd="/")


# -- a real single-node Pacemaker ----------------------------------------------------------------

class Cluster:
    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.procs: list[subprocess.Popen] = []

    def start(self) -> None:
        env = {**os.environ, "PATH": BASE_PATH}
        for argv in (["corosync", "-f"], ["pacemakerd"]):
            log = open(self.workdir / f"{argv[0]}.log", "ab")
            self.procs.append(subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log,
                                               stderr=log, start_new_session=True, env=env))
            log.close()
            if argv[0] == "corosync":
                wait_for("corosync to answer", lambda: sh("corosync-cfgtool", "-s").returncode
                         == 0, timeout=60)
        wait_for("node1 online in crm_mon",
                 lambda: "Online: [ node1 ]" in sh("crm_mon", "-1").stdout, timeout=180)
        wait_for("the CIB to accept pcs", lambda: sh(
            "pcs", "property", "set", "stonith-enabled=false").returncode == 0, timeout=60)

    def stop(self) -> None:
        """TERM pacemakerd (it stops every resource first), then corosync; KILL what lingers."""
        for proc in reversed(self.procs):
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=120)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait(timeout=30)
        for proc in host_processes():
            if proc.info["name"].startswith("pacemaker-"):
                proc.kill()  # a child that outlived pacemakerd (only after a crash)


def host_processes() -> list[psutil.Process]:
    """Processes in our PID namespace: the lab's containers run their own Pacemakers."""
    ours = os.readlink("/proc/self/ns/pid")
    found = []
    for proc in psutil.process_iter(["name"]):
        try:
            if os.readlink(f"/proc/{proc.pid}/ns/pid") == ours and proc.info["name"]:
                found.append(proc)
        except OSError:
            pass
    return found


def cluster_running() -> list[str]:
    return [p.info["name"] for p in host_processes()
            if p.info["name"] in ("corosync", "pacemakerd")]


@pytest.fixture(scope="session")
def cluster():
    """corosync -f + pacemakerd with Debian's one-node corosync.conf; the agent in /usr/lib/ocf.

    The CIB is wiped first (a leftover from a crashed run would restart old resources), which is
    why only one such Pacemaker may run here: a file lock serialises the fixture.
    """
    need_root()
    lock = open(PACEMAKER_LOCK, "w")
    wait_for(f"the lock {PACEMAKER_LOCK}", lambda: _try_lock(lock), timeout=1800, interval=2)
    workdir = Path(tempfile.mkdtemp(prefix="hasched-ocf-cluster-", dir="/tmp"))
    cluster = Cluster(workdir)
    dest = SYSTEM_OCF_ROOT / "resource.d" / "hasched"
    installed_here = not dest.exists()
    try:
        stop_system_cluster()
        if cluster_running():
            pytest.fail(f"a cluster is already running here ({cluster_running()}); stop it first")
        for leftover in Path("/var/lib/pacemaker/cib").glob("cib*"):
            leftover.unlink()
        install_agent(SYSTEM_OCF_ROOT)
        cluster.start()
        yield cluster
    finally:
        cluster.stop()
        if installed_here:
            shutil.rmtree(dest, ignore_errors=True)
        shutil.rmtree(workdir, ignore_errors=True)
        fcntl.flock(lock, fcntl.LOCK_UN)
        lock.close()


def stop_system_cluster() -> None:
    """Stop the machine's own corosync and pacemaker units, where systemd runs them.

    On a Debian booted with systemd, installing pacemaker starts both units with Debian's
    one-node configuration; the fixture's own corosync would then find the port taken. The
    fixture wipes the CIB anyway: this is a test machine.
    """
    if not Path("/run/systemd/system").is_dir():
        return
    for unit in ("pacemaker", "corosync"):
        if sh("systemctl", "is-active", "--quiet", unit).returncode == 0:
            print(f"stopping the system's {unit} unit for the OCF tests", file=sys.stderr)
            sh("systemctl", "stop", unit, check=True)


def _try_lock(lock) -> bool:
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False
