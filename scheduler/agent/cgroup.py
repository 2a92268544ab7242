"""Each run in a cgroup of its own, so that it ends as a whole: nothing a job starts outlives it.

The agent decides once, at start (`prepare`), how runs are contained, and hands the plan to each
supervisor in the run's spec (`Plan.to_spec`); the supervisor opens the run's group from it
(`open_run_group`). Kinds, best first:

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

Standard library only, and os calls rather than file objects: the supervisor is forked from the
launcher, and every page it touches is copied (see spawn.py).
"""

from __future__ import annotations

import os
import signal
import time
from typing import Any

SYSTEMD, CGROUP2, PROCESS_GROUP = "systemd", "cgroup2", "process-group"
SLICE = "hasched.slice"
CONTROLLERS = ("memory", "cpu")
GONE_WAIT = 5.0  # seconds to wait for killed processes to leave the cgroup


# -- reading the system (agent side, once) ----------------------------------------------------
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


def _read(path: str) -> str:
    fd = os.open(path, os.O_RDONLY)
    try:
        return os.read(fd, 65536).decode()
    finally:
        os.close(fd)


def _write(path: str, text: str) -> None:
    fd = os.open(path, os.O_WRONLY)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)


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


def _systemd_plan(found: list[tuple[str, str, set[str]]]) -> Plan | None:
    v2 = [m for m, fstype, _ in found if fstype == "cgroup2"]
    if not os.path.isdir("/run/systemd/system") or not v2 or os.geteuid() != 0:
        return None
    for d in os.environ.get("PATH", os.defpath).split(os.pathsep):
        exe = os.path.join(d, "systemd-run")
        if os.access(exe, os.X_OK):
            return Plan(SYSTEMD, exe=exe, mount=v2[0], slice=SLICE)
    return None


def subtree_name(agent_name: str, state_dir: str) -> str:
    """hasched-agent-NAME-HASH: the hash of the state directory keeps two agents of one name
    (tests, a second instance) out of each other's runs."""
    import hashlib  # noqa: PLC0415 - the agent's only, not the supervisors'

    digest = hashlib.sha256(os.path.realpath(state_dir).encode()).hexdigest()[:8]
    return f"hasched-agent-{agent_name}-{digest}"


def prepare(agent_name: str, state_dir: str) -> Plan:
    """The plan for this agent's runs, with its subtree created; never raises."""
    try:
        found = mounts()
        own = own_cgroups()
    except OSError as e:
        return Plan(PROCESS_GROUP, f"cannot read this process's cgroups: {e}")
    plan = _systemd_plan(found)
    if plan is not None:
        return plan
    v2 = [m for m, fstype, _ in found if fstype == "cgroup2"]
    if not v2 or "" not in own:
        return Plan(PROCESS_GROUP, "no cgroup v2 file system is mounted")
    name = subtree_name(agent_name, state_dir)
    home = _join(v2[0], own[""])
    base = os.path.join(home, name)
    try:
        os.makedirs(base, mode=0o700, exist_ok=True)
        os.chmod(base, 0o700)
    except OSError as e:
        return Plan(PROCESS_GROUP, f"cannot create the cgroup {base}: {e.strerror or e}")
    v2_limits = []
    try:
        available = _read(os.path.join(base, "cgroup.controllers")).split()
    except OSError:
        available = []
    for c in CONTROLLERS:
        if c in available:
            try:
                _write(os.path.join(base, "cgroup.subtree_control"), f"+{c}")
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


# -- one run (supervisor side) ----------------------------------------------------------------
class ProcessGroup:
    """The fallback: the job's process group (its pid: the job leads a session of its own)."""

    def __init__(self) -> None:
        self.pgid: int | None = None

    def command(self, command: list[str], account: tuple[int, int] | None) -> list[str]:
        """The argv to start; `account` (uid, gid): the job's, when the wrapper switches to it
        (then the job is started as the supervisor's own account)."""
        return command

    wraps_account = False  # True: command() switches the account, not the spawn

    def enter(self) -> None:
        """Called before the job is started: it will be born in the group."""

    def leave(self) -> None:
        """Called right after: the supervisor must not be killed with its job."""

    def started(self, pid: int) -> None:
        self.pgid = pid

    def signal(self, sig: int) -> None:
        if self.pgid is not None:
            try:
                os.killpg(self.pgid, sig)
            except (ProcessLookupError, PermissionError):
                pass

    def empty(self) -> bool:
        """True when no process of the run is left (the leader reaped or not)."""
        if self.pgid is None:
            return True
        try:
            os.killpg(self.pgid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            pass
        return False

    def oom_kills(self) -> int:
        return 0

    def close(self) -> list[int]:
        """Remove the group; the pids still in it (it should be empty)."""
        return []


class Cgroup(ProcessGroup):
    """A cgroup v2 directory of the run's own, and v1 ones for limits on a hybrid hierarchy."""

    def __init__(self, plan: dict[str, Any], leaf: str, create: bool = True):
        super().__init__()
        self.path = os.path.join(plan["dir"], leaf)
        self.home = plan["home"]
        self.has_kill = plan["kill"]
        self.v1 = {c: (os.path.join(d[0], leaf), d[1]) for c, d in plan["v1"].items()}
        self.made: list[str] = []
        for path in (self.path, *(d for d, _ in self.v1.values())):
            if create:
                try:
                    os.mkdir(path, 0o700)
                except FileExistsError:
                    pass  # a supervisor before this one died: its leftovers go with ours
            if os.path.isdir(path):
                self.made.append(path)

    def _write_limit(self, controller: str, file: str, text: str) -> None:
        directory = self.v1[controller][0] if controller in self.v1 else self.path
        _write(os.path.join(directory, file), text)

    def enter(self) -> None:
        me = str(os.getpid())
        try:
            for directory, _ in self.v1.values():
                _write(os.path.join(directory, "cgroup.procs"), me)
            _write(os.path.join(self.path, "cgroup.procs"), me)
        except OSError as e:
            raise GroupError(f"cannot enter the run's cgroup {self.path}: "
                             f"{e.strerror or e}") from None

    def leave(self) -> None:
        me = str(os.getpid())
        _write(os.path.join(self.home, "cgroup.procs"), me)
        for _, home in self.v1.values():
            _write(os.path.join(home, "cgroup.procs"), me)

    def pids(self) -> list[int]:
        try:
            return [int(p) for p in _read(os.path.join(self.path, "cgroup.procs")).split()]
        except (OSError, ValueError):
            return []

    def signal(self, sig: int) -> None:
        if sig == signal.SIGKILL and self.has_kill:
            try:
                _write(os.path.join(self.path, "cgroup.kill"), "1")
                return
            except OSError:
                pass
        freeze = os.path.join(self.path, "cgroup.freeze")
        frozen = False
        if sig == signal.SIGKILL and os.path.exists(freeze):
            # No cgroup.kill: frozen, nothing in it can fork between our reading of
            # cgroup.procs and the kills; a frozen process still dies of SIGKILL.
            try:
                _write(freeze, "1")
                frozen = True
            except OSError:
                pass
        for pid in self.pids():
            try:
                os.kill(pid, sig)
            except (ProcessLookupError, PermissionError):
                pass
        if frozen:
            try:
                _write(freeze, "0")
            except OSError:
                pass

    def empty(self) -> bool:
        try:
            return "populated 0" in _read(os.path.join(self.path, "cgroup.events"))
        except OSError:
            return not self.pids()

    def oom_kills(self) -> int:
        if "memory" in self.v1:
            file, key = os.path.join(self.v1["memory"][0], "memory.oom_control"), "oom_kill"
        else:
            file, key = os.path.join(self.path, "memory.events"), "oom_kill"
        try:
            for line in _read(file).splitlines():
                name, _, value = line.partition(" ")
                if name == key:
                    return int(value)
        except (OSError, ValueError):
            pass
        return 0

    def close(self) -> list[int]:
        end = time.monotonic() + GONE_WAIT
        while not self.empty() and time.monotonic() < end:
            self.signal(signal.SIGKILL)
            time.sleep(0.01)
        left = self.pids()
        for path in reversed(self.made):
            try:
                os.rmdir(path)
            except OSError:
                pass  # still populated (a process stuck in the kernel): left for later
        return left


class Scope(Cgroup):
    """A transient systemd scope: systemd-run creates it and applies the limits, then execs the
    job in it; the scope's cgroup is killed like ours."""

    def __init__(self, plan: dict[str, Any], leaf: str, limits: dict[str, int]):  # noqa: PLW0231
        ProcessGroup.__init__(self)
        self.exe = plan["exe"]
        self.unit = "hasched-" + "".join(c if c.isalnum() or c in "-_." else "_" for c in leaf)
        self.path = os.path.join(plan["mount"], plan["slice"], self.unit + ".scope")
        self.home = ""
        self.has_kill = True  # else (an old kernel) signal() falls back to freeze and kill
        self.v1 = {}
        self.made = []
        self.properties = [_systemd_property(n, v) for n, v in limits.items()]

    wraps_account = True

    def command(self, command: list[str], account: tuple[int, int] | None) -> list[str]:
        argv = [self.exe, "--scope", "--quiet", "--collect", f"--slice={SLICE}",
                f"--unit={self.unit}"]
        if account is not None:  # systemd-run switches to it once in the scope
            argv += [f"--uid={account[0]}", f"--gid={account[1]}"]
        for p in self.properties:
            argv += ["-p", p]
        return [*argv, "--", *command]

    def enter(self) -> None:
        pass

    def leave(self) -> None:
        pass

    def signal(self, sig: int) -> None:
        ProcessGroup.signal(self, sig)  # before the scope exists, the leader is all there is
        if os.path.isdir(self.path):
            Cgroup.signal(self, sig)

    def empty(self) -> bool:
        return ProcessGroup.empty(self) and (not os.path.isdir(self.path) or Cgroup.empty(self))

    def close(self) -> list[int]:
        return Cgroup.close(self)  # systemd collects the scope once it is empty


def _limit_file(name: str, value: int, plan: dict[str, Any]) -> tuple[str, str, str]:
    """(controller, file, text) setting a limit; raises LimitError when it cannot be had."""
    controller = {"memory_max": "memory", "cpu_weight": "cpu"}[name]
    if controller in plan["v2"]:
        return controller, {"memory": "memory.max", "cpu": "cpu.weight"}[controller], str(value)
    if controller in plan["v1"]:
        if controller == "memory":
            return controller, "memory.limit_in_bytes", str(value)
        return controller, "cpu.shares", str(max(2, value * 1024 // 100))  # 100 ~ 1024 shares
    raise LimitError(f"{name}: this agent cannot enforce it (no {controller} controller "
                     f"for its cgroups)")


def _systemd_property(name: str, value: int) -> str:
    return {"memory_max": f"MemoryMax={value}", "cpu_weight": f"CPUWeight={value}"}[name]


class LimitError(Exception):
    """A limit the run asks for that this agent cannot enforce; str() is one line."""


class GroupError(Exception):
    """The run's group cannot be used; str() is one line."""


def leaf_name(rundir: str) -> str:
    return "run-" + os.path.basename(rundir)


def open_run_group(spec: dict[str, Any], rundir: str) -> tuple[ProcessGroup, str | None]:
    """The run's group, or the reason the run cannot be started (then nothing was created)."""
    plan = spec.get("cgroup") or {"kind": PROCESS_GROUP}
    limits = {k: int(spec[k]) for k in ("memory_max", "cpu_weight") if spec.get(k) is not None}
    kind = plan["kind"]
    if kind == PROCESS_GROUP:
        if limits:
            name = next(iter(limits))
            return ProcessGroup(), (f"{name}: this agent cannot enforce it (it runs jobs "
                                    f"without cgroups)")
        return ProcessGroup(), None
    try:
        if kind == SYSTEMD:
            return Scope(plan, leaf_name(rundir), limits), None
        group = Cgroup(plan, leaf_name(rundir))
    except OSError as e:
        return ProcessGroup(), f"cannot create the run's cgroup: {e.strerror or e}"
    try:
        for name, value in limits.items():
            group._write_limit(*_limit_file(name, value, plan))
    except LimitError as e:
        group.close()
        return ProcessGroup(), str(e)
    except OSError as e:
        group.close()
        return ProcessGroup(), f"cannot set the run's limits: {e.strerror or e}"
    return group, None


def kill_run(plan: dict[str, Any], rundir: str) -> list[int]:
    """Kill what is left in a run's cgroup and remove it (agent side, for a run whose supervisor
    died); the pids that would not go."""
    if plan.get("kind") == CGROUP2:
        group: Cgroup = Cgroup(plan, leaf_name(rundir), create=False)
        return group.close() if group.made else []
    if plan.get("kind") == SYSTEMD:
        scope = Scope(plan, leaf_name(rundir), {})
        return scope.close() if os.path.isdir(scope.path) else []
    return []
