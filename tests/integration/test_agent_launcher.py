"""The launcher that forks supervisors, and dispatches that arrive together."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import psutil
import pytest
from harness import (
    DEADLINE,
    REPO,
    TOKEN,
    Agent,
    order,
    run_async,
    wait_final,
    wait_for_async,
)

from scheduler.agent.runner import MAX_LAUNCHING

pytestmark = pytest.mark.integration


async def job_supervisor(agent: Agent, run_id: str) -> psutil.Process:
    """The supervisor of a running run: the parent of its job process."""
    c = agent.client()

    async def has_pid() -> bool:
        return (await c.run(run_id, 1))["pid"] is not None

    await wait_for_async(f"the job pid of {run_id}", has_pid)
    job = psutil.Process((await c.run(run_id, 1))["pid"])
    await c.close()
    parent = job.parent()
    assert parent is not None
    return parent


async def wait_launcher(agent: Agent, not_pid: int | None = None) -> psutil.Process:
    found: list[psutil.Process] = []

    async def up() -> bool:
        p = agent.launcher()
        if p is not None and p.pid != not_pid:
            found.append(p)
            return True
        return False

    await wait_for_async("a (new) launcher process", up)
    return found[-1]


def test_the_launcher_forks_supervisors_and_is_restarted_after_being_killed(
    agent: Agent
) -> None:
    async def body() -> None:
        c = agent.client()
        first = await wait_launcher(agent)
        await c.dispatch(order("l1@1", ["sleep", "300"]))
        sup1 = await job_supervisor(agent, "l1@1")
        assert sup1.ppid() == first.pid, "the supervisor was not forked by the launcher"

        first.kill()  # kill -9
        second = await wait_launcher(agent, not_pid=first.pid)
        assert second.pid != first.pid
        await c.dispatch(order("l2@1", ["sleep", "300"]))
        sup2 = await job_supervisor(agent, "l2@1")
        assert sup2.ppid() == second.pid, "the restarted launcher did not fork the supervisor"

        # The run started by the killed launcher went on, and is still the agent's to control.
        assert (await c.run("l1@1", 1))["state"] == "running"
        for run_id in ("l1@1", "l2@1"):
            await c.cancel(run_id, 1, epoch=1)
            done = await wait_final(c, run_id)
            assert done["state"] == "cancelled", done
        await c.close()

    run_async(body)
    assert "launcher (pid" in agent.log() and "died" in agent.log()


def test_ps_tells_the_launcher_and_each_runs_supervisor_apart(agent: Agent) -> None:
    async def body() -> tuple[str, str]:
        c = agent.client()
        launcher = await wait_launcher(agent)
        await c.dispatch(order("title@1", ["sleep", "300"]))
        supervisor = await job_supervisor(agent, "title@1")
        titles = " ".join(launcher.cmdline()), " ".join(supervisor.cmdline())
        await c.cancel("title@1", 1, epoch=1)
        await wait_final(c, "title@1")
        await c.close()
        return titles

    launcher, supervisor = run_async(body)
    assert launcher.startswith("hasched launcher "), launcher
    assert supervisor.startswith("hasched supervisor "), supervisor
    assert "title" in supervisor, "the title does not say which run it supervises"


def test_the_launcher_holds_no_socket_database_or_token(agent: Agent) -> None:
    async def body() -> psutil.Process:
        return await wait_launcher(agent)

    launcher = run_async(body)
    files = [f.path for f in launcher.open_files()]
    assert not any("agent.sqlite" in f for f in files), files
    assert not [c for c in launcher.net_connections(kind="inet")], "it holds a TCP socket"
    assert TOKEN not in " ".join(launcher.cmdline())
    assert TOKEN not in " ".join(launcher.environ().values())


def test_concurrent_dispatches_each_start_once(agent: Agent, tmp_path: Path) -> None:
    marks = tmp_path / "marks"
    n = 40

    async def body() -> None:
        c = agent.client()
        orders = [order(f"burst{i}@1", ["sh", "-c", f'echo {i} >> "{marks}"']) for i in range(n)]
        # Every order twice, all at once: the duplicates arrive while the first is recorded.
        answers = await asyncio.gather(*(c.dispatch(o) for o in orders + orders))
        created = [a[0] for a in answers]
        assert created.count(True) == n, created
        for i in range(n):
            assert created[i] != created[n + i], f"burst{i}@1: created twice or never"
        for o in orders:
            assert (await wait_final(c, o.run_id))["state"] == "succeeded"
        await c.close()

    run_async(body)
    lines = sorted(marks.read_text().split(), key=int)
    assert lines == [str(i) for i in range(n)], "each run must start exactly once"


def test_a_burst_of_large_orders_all_start(agent: Agent) -> None:
    """More than the launcher's socket buffer holds at once: every order still gets its
    supervisor (concurrent sends to the launcher must queue, not replace one another)."""
    n, big = 60, {"PAD": "x" * 30_000}

    async def body() -> None:
        c = agent.client()
        answers = await asyncio.gather(
            *(c.dispatch(order(f"big{i}@1", ["true"], env=big)) for i in range(n)))
        assert all(created for created, _ in answers)
        for i in range(n):
            assert (await wait_final(c, f"big{i}@1"))["state"] == "succeeded"
        await c.close()

    run_async(body)


def test_runs_waiting_for_the_launcher_start_oldest_first(agent: Agent,
                                                          tmp_path: Path) -> None:
    """Past capacity (here: the launcher stopped while orders come in, newest first) the runs
    queue and then start in nominal order, not in the order their orders arrived; nothing is
    lost. The supervisors' pids (each job's $PPID) tell the order the launcher forked them."""
    marks = tmp_path / "marks"
    n = MAX_LAUNCHING + 12
    ids = [f"q@2026-12-01T00:00:{s:02d}Z" for s in range(n)]

    async def body() -> None:
        launcher = await wait_launcher(agent)
        c = agent.client()
        launcher.suspend()
        try:
            for run_id in reversed(ids):
                created, _ = await c.dispatch(order(run_id, [
                    "/bin/sh", "-c", f'echo "$HASCHED_RUN_ID $PPID" >> "{marks}"']))
                assert created
        finally:
            launcher.resume()
        for run_id in ids:
            assert (await wait_final(c, run_id))["state"] == "succeeded"
        await c.close()

    run_async(body)
    lines = [line.split() for line in marks.read_text().splitlines()]
    assert sorted(r for r, _ in lines) == ids, "each run must start exactly once"
    forked = [r for r, _ in sorted(lines, key=lambda x: int(x[1]))]
    # The first MAX_LAUNCHING went to the launcher as they came; the others waited for it.
    assert forked[MAX_LAUNCHING:] == sorted(forked[MAX_LAUNCHING:]), forked


def test_a_second_supervisor_for_a_claimed_run_leaves_it(tmp_path: Path) -> None:
    rundir = tmp_path / "run.1"
    rundir.mkdir()
    marker = tmp_path / "ran"
    spec = order("claimed@1", ["touch", str(marker)]).to_json() | {
        "output_limit": 1024, "kill_grace": 1}
    (rundir / "spec.json").write_text(json.dumps(spec))
    (rundir / "started.json").write_text('{"supervisor_pid": 1}')  # another supervisor has it
    proc = subprocess.run([sys.executable, "-m", "scheduler.agent.supervise", str(rundir)],
                          cwd=REPO, capture_output=True, text=True, timeout=DEADLINE)
    assert proc.returncode == 0
    assert "another supervisor has claimed this run" in proc.stderr
    assert not (rundir / "result.json").exists() and not marker.exists()


def test_the_exec_path_supervises_a_run_alone(tmp_path: Path) -> None:
    """What the agent falls back to when it has no launcher: one interpreter per run."""
    rundir = tmp_path / "run.1"
    rundir.mkdir()
    spec = order("alone@1", ["sh", "-c", "echo out; echo err >&2; exit 3"]).to_json() | {
        "output_limit": 1024, "kill_grace": 1, "allow_agent_account": True}
    (rundir / "spec.json").write_text(json.dumps(spec))
    subprocess.run([sys.executable, "-m", "scheduler.agent.supervise", str(rundir)],
                   cwd=REPO, check=True, timeout=DEADLINE)
    result = json.loads((rundir / "result.json").read_text())
    assert result["exit_code"] == 3 and result["stdout_bytes"] == 4
    assert (rundir / "stdout").read_text() == "out\n" and (rundir / "stderr").read_text() == "err\n"
    assert json.loads((rundir / "started.json").read_text())["pid"] == result["pid"]
