"""How this agent contains its runs, decided once at its start: the plan its supervisors get.

`prepare` finds what the machine offers and makes the agent's subtree; the plan travels to each
supervisor in the run's spec (`Plan.to_spec`), which opens the run's group from it
(scheduler/agent/cgroup.py). Kinds, best first:

- "systemd": systemd is PID 1. The job is started through `systemd-run --scope`, a transient
  scope in hasched.slice that systemd creates and applies the limits to; the scope's cgroup
  is then killed through its cgroup v2 files like the next kind.
- "cgroup2": a cgroup v2 tree is mounted (found in /proc/self/mountinfo) and writable. The
  agent owns a subtree beside its own cgroup, hasched-agent-NAME (0700), and each run gets
  run-RUNDIR in it: the supervisor writes its own pid to the run's cgroup.procs, starts the
  job (which inherits the cgroup, so posix_spawn stays the fast path), and moves itself back.
  Killing writes cgroup.kill; a kernel without it (before 5.14) gets cgroup.freeze, then
  SIGKILL to every pid in cgroup.procs, until it is empty. On a hybrid hierarchy (v2 with no
  controllers, v1 memory and cpu mounted apart) the limits go to v1 directories of the same
  name, which the supervisor enters and leaves the same way.
- "process-group": no cgroup can be made (not root, no cgroup2 mount). The job's process
  group is signalled instead: a child that calls setsid escapes it. Said once in the log and
  in the agent's /v1/health.

memory_max and cpu_weight are applied where their controller exists; where it does not, the
run FAILS with a reason naming the setting, and nothing is started: a limit silently ignored
would be worse than none asked for.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from typing import Any

from scheduler.agent.cgroup import (
    CGROUP2,
    CONTROLLERS,
    PROCESS_GROUP,
    SLICE,
    SYSTEMD,
    Cgroup,
    read_text,
    write_text,
)


def _unescape(field: str) -> str:
    """Mount points in mountinfo have space, tab, newline and backslash as octal escapes."""
    for code, char in (("\\040", " "), ("\\011", "\t"), ("\\012", "\n"), ("\\134", "\\")):
        field = field.replace(code, char)
    return field


def mounts(mountinfo: str = "/proc/self/mountinfo") -> list[tuple[str, str, set[str]]]:
    """(mount point, file system type, super options) of every mount."""
    out = []
    with open(mountinfo) as f:
        for line in f:
            left, _, right = line.partition(" - ")
            fields, rest = left.split(), right.split()
            if len(fields) >= 5 and len(rest) >= 3:
                out.append((_unescape(fields[4]), rest[0], set(rest[2].split(","))))
    return out


def own_cgroups(path: str = "/proc/self/cgroup") -> dict[str, str]:
    """This process's cgroup per hierarchy: "" for cgroup v2, else each v1 controller name."""
    out = {}
    with open(path) as f:
        for line in f:
            _, controllers, where = line.rstrip("\n").split(":", 2)
            for c in controllers.split(",") if controllers else [""]:
                out[c] = where
    return out


def _join(mount: str, where: str, *names: str) -> str:
    return os.path.join(mount, where.lstrip("/"), *names)


class Plan:
    """How this agent contains its runs (see the module's docstring)."""

    def __init__(self, kind: str, note: str = "", **spec: Any):
        self.kind = kind
        self.note = note  # what is missing, in a sentence (empty when nothing is)
        self.spec = {"kind": kind, **spec}

    def to_spec(self) -> dict[str, Any]:
        return self.spec

    def limits(self) -> list[str]:
        if self.kind == SYSTEMD:
            return list(CONTROLLERS)
        return sorted(set(self.spec.get("v2", [])) | set(self.spec.get("v1", {})))

    def health(self) -> dict[str, Any]:
        return {"kind": self.kind, "limits": self.limits(), "note": self.note or None}

    def remove(self, kill: bool = False) -> None:
        """Remove the agent's subtree, at its stop: the runs' cgroups left empty by their
        supervisors (a run still in flight keeps its own, and so the subtree, for the next
        agent to adopt), or with `kill`, every run's processes first (tests, cleaning up)."""
        if self.kind != CGROUP2:
            return
        dirs = [self.spec["dir"]] + [d[0] for d in self.spec["v1"].values()]
        for d in dirs:
            try:
                leaves = [n for n in os.listdir(d) if n.startswith("run-")]
            except OSError:
                continue
            for leaf in leaves:
                if kill and d == self.spec["dir"]:
                    Cgroup(self.spec, leaf, create=False).close()
                try:
                    os.rmdir(os.path.join(d, leaf))
                except OSError:
                    pass
            try:
                os.rmdir(d)
            except OSError:
                pass  # runs left to their supervisors, which the next agent adopts


def _systemd_plan(found: list[tuple[str, str, set[str]]]) -> tuple[Plan | None, str]:
    """The systemd plan, once a probe scope worked; else (None, why not, or "")."""
    v2 = [m for m, fstype, _ in found if fstype == "cgroup2"]
    if not os.path.isdir("/run/systemd/system") or not v2 or os.geteuid() != 0:
        return None, ""
    exe = shutil.which("systemd-run")
    if exe is None:
        return None, "systemd-run not found"
    # One scope made and gone, as each run's will be: where systemd puts it is where runs are
    # killed, so it is read, not assumed.
    unit = f"hasched-probe-{os.getpid()}"
    try:
        probe = subprocess.run(
            [exe, "--scope", "--quiet", "--collect", f"--slice={SLICE}", f"--unit={unit}",
             "--", "cat", "/proc/self/cgroup"], capture_output=True, text=True, timeout=20,
            stdin=subprocess.DEVNULL)
    except (OSError, subprocess.SubprocessError) as e:
        return None, f"systemd-run --scope failed: {e}"
    where = [line[3:] for line in probe.stdout.splitlines() if line.startswith("0::")]
    if probe.returncode != 0 or not where or not where[0].endswith(f"/{unit}.scope"):
        why = " ".join((probe.stderr or probe.stdout).split())[:200]
        return None, f"systemd-run --scope failed (status {probe.returncode}): {why}"
    slice_dir = os.path.dirname(where[0]).lstrip("/")
    return Plan(SYSTEMD, exe=exe, mount=v2[0], slice=slice_dir), ""


def subtree_name(agent_name: str, state_dir: str) -> str:
    """hasched-agent-NAME-HASH: the hash of the state directory keeps two agents of one name
    (tests, a second instance) out of each other's runs."""
    digest = hashlib.sha256(os.path.realpath(state_dir).encode()).hexdigest()[:8]
    return f"hasched-agent-{agent_name}-{digest}"


def prepare(agent_name: str, state_dir: str) -> Plan:
    """The plan for this agent's runs, with its subtree created; never raises."""
    try:
        found = mounts()
        own = own_cgroups()
    except OSError as e:
        return Plan(PROCESS_GROUP, f"cannot read this process's cgroups: {e}")
    plan, why_not = _systemd_plan(found)
    if plan is None:
        plan = _cgroup2_plan(found, own, subtree_name(agent_name, state_dir))
    if why_not:  # systemd is there, but its scopes could not be had
        plan.note = why_not + (f"; {plan.note}" if plan.note else "")
    return plan


def _cgroup2_plan(found: list[tuple[str, str, set[str]]], own: dict[str, str],
                  name: str) -> Plan:
    v2 = [m for m, fstype, _ in found if fstype == "cgroup2"]
    if not v2 or "" not in own:
        return Plan(PROCESS_GROUP, "no cgroup v2 file system is mounted")
    home = _join(v2[0], own[""])
    base = os.path.join(home, name)
    try:
        os.makedirs(base, mode=0o700, exist_ok=True)
        os.chmod(base, 0o700)
    except OSError as e:
        return Plan(PROCESS_GROUP, f"cannot create the cgroup {base}: {e.strerror or e}")
    v2_limits = []
    try:
        available = read_text(os.path.join(base, "cgroup.controllers")).split()
    except OSError:
        available = []
    for c in CONTROLLERS:
        if c in available:
            try:
                write_text(os.path.join(base, "cgroup.subtree_control"), f"+{c}")
                v2_limits.append(c)
            except OSError:
                pass
    v1: dict[str, list[str]] = {}
    for c in CONTROLLERS:
        if c in v2_limits:
            continue
        for mount, fstype, options in found:
            if fstype == "cgroup" and c in options and c in own:
                try:
                    os.makedirs(_join(mount, own[c], name), mode=0o700, exist_ok=True)
                except OSError:
                    break
                v1[c] = [_join(mount, own[c], name), _join(mount, own[c])]
                break
    missing = [c for c in CONTROLLERS if c not in v2_limits and c not in v1]
    note = f"no {' nor '.join(missing)} controller: jobs with such limits fail" if missing else ""
    kill = os.path.exists(os.path.join(base, "cgroup.kill"))
    return Plan(CGROUP2, note, dir=base, home=home, kill=kill, v2=v2_limits, v1=v1)


