"""Each run in a group of its own, so that it ends as a whole: nothing a job starts outlives it.

The supervisor side: a run's group, opened from the plan the agent made at start (see
scheduler/agent/containment.py for the kinds and how the plan is made):

- ProcessGroup: the fallback, the job's process group (a child calling setsid escapes it).
- Cgroup: run-RUNDIR in the agent's cgroup v2 subtree. The supervisor writes its own pid to its
  cgroup.procs, starts the job (born there, so posix_spawn stays the fast path) and moves
  itself back. Killing writes cgroup.kill; a kernel without it (before 5.14) gets
  cgroup.freeze, then SIGKILL to every pid in cgroup.procs, until it is empty. On a hybrid
  hierarchy the limits go to v1 directories of the same name, entered and left the same way.
- Scope: a transient systemd scope made by `systemd-run --scope`, killed like a Cgroup.

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
LIMITS = {"memory_max": "memory", "cpu_weight": "cpu"}  # each limit's controller
GONE_WAIT = 5.0  # seconds to wait for killed processes to leave the cgroup


def read_text(path: str) -> str:
    fd = os.open(path, os.O_RDONLY)
    try:
        return os.read(fd, 65536).decode()
    finally:
        os.close(fd)


def write_text(path: str, text: str) -> None:
    fd = os.open(path, os.O_WRONLY)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)


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

    def __init__(self, plan: dict[str, Any], leaf: str, create: bool = True,
                 controllers: set[str] | None = None):
        """`controllers`: the v1 ones the run needs (its limits), None: all (to clean up).
        Most runs have no limits and so cost one cgroup, not three."""
        super().__init__()
        self.path = os.path.join(plan["dir"], leaf)
        self.home = plan["home"]
        self.has_kill = plan["kill"]
        self.v1 = {c: (os.path.join(d[0], leaf), d[1]) for c, d in plan["v1"].items()
                   if controllers is None or c in controllers}
        self.made: list[str] = []
        for path in (self.path, *(d for d, _ in self.v1.values())):
            if create:
                try:
                    os.mkdir(path, 0o700)
                except FileExistsError:
                    pass  # a supervisor before this one died: its leftovers go with ours
                self.made.append(path)
            elif os.path.isdir(path):
                self.made.append(path)

    def _write_limit(self, controller: str, file: str, text: str) -> None:
        directory = self.v1[controller][0] if controller in self.v1 else self.path
        write_text(os.path.join(directory, file), text)

    def enter(self) -> None:
        me = str(os.getpid())
        try:
            for directory, _ in self.v1.values():
                write_text(os.path.join(directory, "cgroup.procs"), me)
            write_text(os.path.join(self.path, "cgroup.procs"), me)
        except OSError as e:
            raise GroupError(f"cannot enter the run's cgroup {self.path}: "
                             f"{e.strerror or e}") from None

    def leave(self) -> None:
        me = str(os.getpid())
        try:
            write_text(os.path.join(self.home, "cgroup.procs"), me)
        except OSError as e:
            # The job has started: the run goes on, but its cgroup holds its supervisor too,
            # so it is killed pid by pid, this one spared (no cgroup.kill nor freeze).
            self.inside = True
            os.write(2, f"cannot leave the run's cgroup {self.path}: {e}\n".encode())
        for _, home in self.v1.values():
            try:
                write_text(os.path.join(home, "cgroup.procs"), me)
            except OSError:
                pass  # a limit then counts the supervisor too: no harm to the kill

    inside = False  # the supervisor could not leave the run's cgroup (see leave())

    def pids(self) -> list[int]:
        try:
            pids = [int(p) for p in read_text(os.path.join(self.path, "cgroup.procs")).split()]
        except (OSError, ValueError):
            return []
        return [p for p in pids if p != os.getpid()] if self.inside else pids

    def signal(self, sig: int) -> None:
        if sig == signal.SIGKILL and self.has_kill and not self.inside:
            try:
                write_text(os.path.join(self.path, "cgroup.kill"), "1")
                return
            except OSError:
                pass
        freeze = os.path.join(self.path, "cgroup.freeze")
        frozen = False
        if sig == signal.SIGKILL and not self.inside and os.path.exists(freeze):
            # No cgroup.kill: frozen, nothing in it can fork between our reading of
            # cgroup.procs and the kills; a frozen process still dies of SIGKILL.
            try:
                write_text(freeze, "1")
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
                write_text(freeze, "0")
            except OSError:
                pass

    def empty(self) -> bool:
        if self.inside:
            return not self.pids()
        try:
            return "populated 0" in read_text(os.path.join(self.path, "cgroup.events"))
        except OSError:
            return not self.pids()

    def oom_kills(self) -> int:
        if "memory" in self.v1:
            file, key = os.path.join(self.v1["memory"][0], "memory.oom_control"), "oom_kill"
        else:
            file, key = os.path.join(self.path, "memory.events"), "oom_kill"
        try:
            for line in read_text(file).splitlines():
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
    controller = LIMITS[name]
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
        group = Cgroup(plan, leaf_name(rundir), controllers={LIMITS[n] for n in limits})
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
