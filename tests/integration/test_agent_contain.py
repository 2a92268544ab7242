"""Whatever a run starts ends with it (each run in a cgroup of its own, or its process group
where no cgroup can be had), limits are enforced or the run fails, and a missing cwd is named.

Real agents, real processes; the cgroup cases need root and a writable cgroup2 mount and are
skipped elsewhere (the agent then says "process-group" in /v1/health).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest
from harness import Agent, order, run_async, wait_file, wait_final

pytestmark = pytest.mark.integration

KINDS = ["cgroup", "process-group"]


def start(agent_factory: Callable[..., Agent], kind: str) -> Agent:
    a = agent_factory(**({} if kind == "cgroup" else {"cgroups": "false"}))
    health = run_async(lambda: a.client().health())
    if kind == "cgroup" and health["cgroups"]["kind"] == "process-group":
        pytest.skip(f"no cgroup for runs here: {health['cgroups']['note']}")
    return a


def run(a: Agent, run_id: str, command: list[str], **kw: object) -> dict:
    async def body() -> dict:
        c = a.client()
        try:
            await c.dispatch(order(run_id, command, **kw))
            return await wait_final(c, run_id)
        finally:
            await c.close()
    return run_async(body)


def gone(pid: int) -> bool:
    """No such process (a zombie waiting for init to reap it counts as gone)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def child_pid(path: Path) -> int:
    return int(wait_file(path).split()[0])


@pytest.mark.parametrize("kind", KINDS)
def test_a_child_left_behind_by_a_succeeded_run_is_killed(
        agent_factory: Callable[..., Agent], tmp_path: Path, kind: str) -> None:
    a = start(agent_factory, kind)
    pidfile = tmp_path / "child"
    # The child stays in the job's process group and holds its output pipes.
    done = run(a, "left@1", ["sh", "-c", f'sleep 300 & echo $! > "{pidfile}"; exit 0'])
    assert done["state"] == "succeeded", done
    assert gone(child_pid(pidfile)), "the run's child outlived a succeeded run"


@pytest.mark.parametrize("kind", KINDS)
def test_a_child_ignoring_term_is_killed_at_timeout_after_its_leader_is_reaped(
        agent_factory: Callable[..., Agent], tmp_path: Path, kind: str) -> None:
    a = start(agent_factory, kind)
    pidfile = tmp_path / "child"
    # The leader dies of TERM at once; its child ignores TERM, so only KILL ends it, and that
    # is sent after the leader was reaped (kill_grace 1s).
    script = (f'(trap "" TERM; echo $$BASHPID > /dev/null; while :; do sleep 0.1; done) & '
              f'echo $! > "{pidfile}"; wait')
    done = run(a, "stubborn@1", ["bash", "-c", script], timeout=1)
    assert done["state"] == "timed-out", done
    assert gone(child_pid(pidfile)), "a child ignoring TERM outlived a timed-out run"


def test_a_child_that_calls_setsid_does_not_escape(
        agent_factory: Callable[..., Agent], tmp_path: Path) -> None:
    a = start(agent_factory, "cgroup")
    pidfile = tmp_path / "escapee"
    script = (f'setsid sh -c \'echo $$ > "{pidfile}"; exec sleep 300\' </dev/null >/dev/null '
              f'2>&1 & while [ ! -s "{pidfile}" ]; do sleep 0.05; done')
    done = run(a, "escape@1", ["sh", "-c", script])
    assert done["state"] == "succeeded", done
    pid = child_pid(pidfile)
    assert gone(pid), "a child in a session of its own outlived the run"


def test_the_run_cgroup_is_removed_and_health_says_how_runs_are_contained(
        agent_factory: Callable[..., Agent]) -> None:
    a = start(agent_factory, "cgroup")
    health = run_async(lambda: a.client().health())["cgroups"]
    assert health["kind"] in ("cgroup2", "systemd")
    done = run(a, "where@1", ["cat", "/proc/self/cgroup"])
    assert done["state"] == "succeeded"
    out = run_async(lambda: a.client().output("where@1", 1))
    v2 = next(line for line in out.splitlines() if line.startswith("0::"))
    assert v2.endswith("/run-where@1.1"), out  # its own cgroup, named after the run
    mount = next(line.split()[4] for line in open("/proc/self/mountinfo")
                 if line.split(" - ")[1].startswith("cgroup2 "))
    run_dir = Path(mount) / v2[3:].lstrip("/")
    assert not run_dir.exists(), "the run's cgroup is removed when the run ends"
    assert oct(run_dir.parent.stat().st_mode & 0o777) == "0o700"


def test_memory_max_is_enforced(agent_factory: Callable[..., Agent]) -> None:
    a = start(agent_factory, "cgroup")
    if "memory" not in run_async(lambda: a.client().health())["cgroups"]["limits"]:
        pytest.skip("no memory controller for the agent's cgroups here")
    grab = ["python3", "-c", "b = bytearray(400 * 1024 * 1024); b[::4096] = b'x' * len(b[::4096])"]
    done = run(a, "hog@1", grab, memory_max=64 * 1024 * 1024)
    assert done["state"] == "failed", done
    assert "out of memory" in done["reason"], done
    small = run(a, "fits@1", ["python3", "-c", "b = bytearray(8 * 1024 * 1024)"],
                memory_max=64 * 1024 * 1024)
    assert small["state"] == "succeeded", small


READ_WEIGHT = """
own = {}
for line in open("/proc/self/cgroup"):
    _, controllers, where = line.rstrip("\\n").split(":", 2)
    for c in controllers.split(",") if controllers else [""]:
        own[c] = where
for line in open("/proc/self/mountinfo"):
    left, _, right = line.partition(" - ")
    point, (fstype, _, options) = left.split()[4], right.split()[:3]
    if fstype == "cgroup2":
        try:
            print(open(point + own[""] + "/cpu.weight").read().strip())
            break
        except OSError:
            pass
    elif fstype == "cgroup" and "cpu" in options.split(","):
        print(open(point + own["cpu"] + "/cpu.shares").read().strip())
        break
"""


def test_cpu_weight_is_applied(
        agent_factory: Callable[..., Agent], tmp_path: Path) -> None:
    a = start(agent_factory, "cgroup")
    if "cpu" not in run_async(lambda: a.client().health())["cgroups"]["limits"]:
        pytest.skip("no cpu controller for the agent's cgroups here")
    # The job reads its own cgroup's setting: cpu.weight (v2) or cpu.shares (v1).
    script = tmp_path / "weight.py"
    script.write_text(READ_WEIGHT)
    done = run(a, "weighted@1", ["python3", str(script)], cpu_weight=50)
    assert done["state"] == "succeeded", done
    out = run_async(lambda: a.client().output("weighted@1", 1)).strip()
    assert out in ("50", "512"), out  # v2 weight 50, or v1 shares 50 * 1024 / 100


def test_a_limit_that_cannot_be_enforced_fails_the_run(
        agent_factory: Callable[..., Agent], tmp_path: Path) -> None:
    a = start(agent_factory, "process-group")
    mark = tmp_path / "ran"
    done = run(a, "nolimit@1", ["touch", str(mark)], memory_max=64 * 1024 * 1024)
    assert done["state"] == "failed"
    assert done["reason"].startswith("memory_max: this agent cannot enforce it"), done
    assert not mark.exists(), "nothing is started"


def test_a_missing_cwd_is_named(agent_factory: Callable[..., Agent]) -> None:
    a = agent_factory()
    done = run(a, "nocwd@1", ["true"], cwd="/nonexistent/hasched-cwd")
    assert done["state"] == "failed"
    assert done["reason"] == "cwd /nonexistent/hasched-cwd does not exist (or is not a directory)"


def test_no_process_of_the_runs_is_left(
        agent_factory: Callable[..., Agent], tmp_path: Path) -> None:
    """A last sweep over the shapes above, by pid namespace walk: nothing of ours lives on."""
    a = start(agent_factory, "cgroup")
    marker = f"hasched-leftover-{os.getpid()}-{time.monotonic_ns()}"
    run(a, "sweep@1", ["bash", "-c", f'(exec -a {marker} sleep 300) & setsid bash -c '
                                     f'"exec -a {marker} sleep 300" & exit 0'])
    left = [p for p in psutil.process_iter(["cmdline"]) if marker in " ".join(
        p.info["cmdline"] or [])]
    assert not [p for p in left if not gone(p.pid)], left


def test_the_job_of_a_supervisor_that_died_is_killed_with_its_cgroup(
        agent_factory: Callable[..., Agent], tmp_path: Path) -> None:
    a = start(agent_factory, "cgroup")
    pidfile = tmp_path / "job"

    async def body() -> dict:
        c = a.client()
        try:
            await c.dispatch(order("orphan@1", ["sh", "-c", f'echo $$ > "{pidfile}"; sleep 300']))
            child_pid(pidfile)
            (sup,) = a.supervisors()
            sup.kill()  # SIGKILL: no result, and nobody left to end the job
            return await wait_final(c, "orphan@1")
        finally:
            await c.close()

    done = run_async(body)
    assert done["state"] == "failed" and "supervisor died" in done["reason"], done
    assert gone(child_pid(pidfile)), "the job outlived its dead supervisor"
