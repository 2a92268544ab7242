"""Stand-ins for what the OCF agent talks to, so its promotion logic runs without Pacemaker:
crm_attribute, attrd_updater and crm_node (one script under three names on PATH), `hasched ctl`,
the daemon's control socket, and a look-alike daemon process for the PID file.

Everything shares one JSON file, `state.json`: the fake cluster (this node, the partition, the
promotion scores and the attrd attributes by node) and what the daemon answers to `status`.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path

AGENT = Path(__file__).resolve().parents[2] / "resource-agents" / "hasched" / "scheduler"

# crm_attribute / attrd_updater / crm_node, as far as the agent uses them. The cluster's node
# attributes live in state.json; each call is appended to calls.log.
CRM_TOOLS = r'''
import json, os, sys
state_path = os.environ["FAKE_CRM_STATE"]
with open(state_path) as f:
    state = json.load(f)
tool, args = os.path.basename(sys.argv[0]), sys.argv[1:]
with open(os.path.join(os.path.dirname(state_path), "calls.log"), "a") as log:
    log.write(" ".join([tool, *args]) + "\n")
if not state.get("cluster", True):
    print("Could not connect to the CIB: Transport endpoint is not connected", file=sys.stderr)
    sys.exit(102)

def value(flag):
    return args[args.index(flag) + 1] if flag in args else None

node = value("-N") or value("--node") or state["node"]
if tool == "crm_node":
    print(state["node"] if "-n" in args else " ".join(state["partition"]))
elif tool == "crm_attribute" and "--promotion" in args:
    if "-D" in args:
        state["scores"].pop(node, None)
    elif "-v" in args:
        state["scores"][node] = value("-v")
elif tool == "crm_attribute":  # the epoch, a cluster property
    name = value("--name")
    if "--update" in args:
        state["config"][name] = value("--update")
    elif name not in state["config"]:
        sys.exit(105)
    else:
        print(state["config"][name])
elif tool == "attrd_updater":
    values = state["attrs"].setdefault(value("-n"), {})
    if "-U" in args:
        values[node] = value("-U")
    elif "-D" in args:
        values[node] = ""
    elif "-Q" in args:
        for host in (sorted(values) if "-A" in args else [node]):
            if host in values:
                print(f'name="{value("-n")}" host="{host}" value="{values[host]}"')
with open(state_path, "w") as f:
    json.dump(state, f)
'''

# `hasched ctl --socket S promote --epoch N | demote`: the fake daemon changes its role.
HASCHED_CTL = r'''
import json, os, sys
state_path = os.environ["FAKE_CRM_STATE"]
with open(state_path) as f:
    state = json.load(f)
args = sys.argv[1:]
if "promote" in args:
    state["status"].update(role="active", epoch=int(args[args.index("--epoch") + 1]))
elif "demote" in args:
    state["status"]["role"] = "standby"
with open(state_path, "w") as f:
    json.dump(state, f)
'''


class FakeNode:
    """One cluster node as the agent sees it: fake tools on PATH, a control socket answering
    `status` from state.json, and a process whose command line is our daemon's."""

    def __init__(self, root: Path, status: dict, node: str = "node1",
                 partition: tuple[str, ...] = ("node1", "node2")) -> None:
        self.root = root
        self.state_path = root / "state.json"
        self.write({"node": node, "partition": list(partition), "scores": {}, "attrs": {},
                    "config": {}, "cluster": True, "status": status})
        bin_dir = root / "bin"
        bin_dir.mkdir()
        for name, source in (("crm_attribute", CRM_TOOLS), ("attrd_updater", CRM_TOOLS),
                             ("crm_node", CRM_TOOLS), ("hasched", HASCHED_CTL)):
            tool = bin_dir / name
            tool.write_text(f"#!{sys.executable}\n{source}")
            tool.chmod(0o755)
        self.bin_dir, self.node = bin_dir, node
        self.config = root / "scheduler.toml"
        self.config.write_text("[scheduler]\n")
        self.pidfile = root / "scheduler.pid"
        self.socket = root / "control.sock"
        self.daemon: subprocess.Popen | None = None
        self._listener: socket.socket | None = None

    # -- state.json ----------------------------------------------------------------------------
    def read(self) -> dict:
        return json.loads(self.state_path.read_text())

    def write(self, state: dict) -> None:
        self.state_path.write_text(json.dumps(state))

    def update(self, **changes) -> None:
        state = self.read()
        state.update(changes)
        self.write(state)

    def set_status(self, **changes) -> None:
        state = self.read()
        state["status"].update(changes)
        self.write(state)

    def record(self, node: str, position: str, name: str = "hasched-position-jobs") -> None:
        """What another node's agent recorded in attrd."""
        state = self.read()
        state["attrs"].setdefault(name, {})[node] = position
        self.write(state)

    def calls(self) -> list[str]:
        log = self.root / "calls.log"
        return log.read_text().splitlines() if log.exists() else []

    # -- the daemon ----------------------------------------------------------------------------
    def start_daemon(self) -> None:
        """A look-alike of `hasched scheduler run --config C` in the PID file, and the socket."""
        self.daemon = subprocess.Popen(
            [sys.executable, "-c", "import time; time.sleep(600)", "scheduler", "run",
             "--config", str(self.config)], stdin=subprocess.DEVNULL)
        with open(f"/proc/{self.daemon.pid}/stat", "rb") as f:
            stat = f.read()
        started = int(stat[stat.rfind(b")") + 2:].split()[19])
        self.pidfile.write_text(f"{self.daemon.pid}\n{started}\n")
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._listener.bind(str(self.socket))
        self._listener.listen(8)
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            with conn:
                conn.makefile().readline()
                answer = {"ok": True, **self.read()["status"]}
                conn.sendall(json.dumps(answer).encode() + b"\n")

    def stop_daemon(self) -> None:
        if self._listener is not None:
            self._listener.close()
        if self.daemon is not None:
            self.daemon.kill()
            self.daemon.wait()

    # -- running the agent ---------------------------------------------------------------------
    def env(self, **meta: str) -> dict[str, str]:
        env = {"PATH": f"{self.bin_dir}:/usr/bin:/bin", "FAKE_CRM_STATE": str(self.state_path),
               "OCF_ROOT": str(self.root), "OCF_RESOURCE_INSTANCE": "jobs:0",
               "HA_LOGFILE": str(self.root / "agent.log"), "HA_debug": "0",
               "OCF_RESKEY_config": str(self.config), "OCF_RESKEY_pidfile": str(self.pidfile),
               "OCF_RESKEY_socket": str(self.socket),
               "OCF_RESKEY_hasched": str(self.bin_dir / "hasched"),
               "OCF_RESKEY_CRM_meta_promotable": "true", "OCF_RESKEY_CRM_meta_timeout": "20000",
               "OCF_RESKEY_CRM_meta_on_node": self.node,
               "PYTHONPATH": str(AGENT.parents[1])}
        env.update({f"OCF_RESKEY_CRM_meta_{k}": v for k, v in meta.items()})
        return env

    def run(self, action: str, **meta: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, str(AGENT), action], env=self.env(**meta),
                              capture_output=True, text=True, timeout=60, cwd="/")

    def log(self) -> str:
        path = self.root / "agent.log"
        return path.read_text() if path.exists() else ""


def replication(state: str, seq: int, epoch: int = 3, lineage: str = "a1b2", **more) -> dict:
    """A `replication` object of the status answer, as the design's contract spells it."""
    return {"mode": "sync", "state": state, "lineage": lineage, "seq": seq, "epoch": epoch,
            "source": None if state in ("primary", "alone") else "https://node2:8480",
            "lag_seconds": None, "behind": 0, **more}


def standby_status(state: str = "in-sync", seq: int = 100, **more) -> dict:
    return {"role": "standby", "epoch": 3, "pid": os.getpid(),
            "replication": replication(state, seq, **more)}
