"""What an agent remembers across restarts and crashes: the epoch, runs in flight, and the runs
whose processes died with the machine."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest
from agenthelp import (
    DEADLINE,
    REPO,
    Agent,
    agent,  # noqa: F401  (fixture)
    agent_factory,  # noqa: F401  (fixture)
    order,
    run_async,
    wait_file,
    wait_final,
    wait_for,
)

from scheduler.protocol import StaleEpoch

pytestmark = pytest.mark.integration


def wait_gone(pid: int) -> None:
    end = time.monotonic() + DEADLINE
    while psutil.pid_exists(pid):
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return
        except psutil.NoSuchProcess:
            return
        if time.monotonic() > end:
            raise AssertionError(f"process {pid} still alive after {DEADLINE}s")
        time.sleep(0.05)


def test_stale_epoch_is_refused_and_the_epoch_survives_a_restart(
    agent: Agent, tmp_path: Path  # noqa: F811
) -> None:
    marker = tmp_path / "stale-ran"

    async def first() -> None:
        c = agent.client()
        created, _ = await c.dispatch(order("e5@1", ["true"], epoch=5))
        assert created
        with pytest.raises(StaleEpoch) as e:
            await c.dispatch(order("e4@1", ["touch", str(marker)], epoch=4))
        assert e.value.agent_epoch == 5
        assert "stale epoch 4, agent has seen 5" in str(e.value)
        assert await c.run("e4@1", 1) is None
        await c.close()

    run_async(first)
    assert agent.stop() == 0  # SIGTERM: clean exit
    agent.start()

    async def second() -> None:
        c = agent.client()
        assert (await c.health())["epoch"] == 5
        with pytest.raises(StaleEpoch):
            await c.dispatch(order("e4@1", ["touch", str(marker)], epoch=4))
        assert await c.run("e4@1", 1) is None
        created, _ = await c.dispatch(order("e6@1", ["true"], epoch=6))  # higher: accepted
        assert created and (await c.health())["epoch"] == 6
        await wait_final(c, "e6@1")
        await c.close()

    run_async(second)
    assert not marker.exists(), "an order with a stale epoch started its command"


def test_runs_survive_an_agent_crash(agent: Agent, tmp_path: Path) -> None:  # noqa: F811
    """kill -9 the agent mid-run: one run finishes while it is down, one after it is back."""
    scripts = {}
    for name in ("a", "b"):
        scripts[name] = (f'echo $$ > "{tmp_path}/{name}.pid"; '
                         f'while [ ! -e "{tmp_path}/{name}.go" ]; do sleep 0.1; done; echo {name}')

    async def dispatch() -> None:
        c = agent.client()
        for name, script in scripts.items():
            assert (await c.dispatch(order(f"{name}@1", ["sh", "-c", script])))[0]
        await c.close()

    run_async(dispatch)
    pid_a = int(wait_file(tmp_path / "a.pid"))
    wait_file(tmp_path / "b.pid")
    agent.kill9()
    assert len(agent.supervisors()) == 2, "supervisors must outlive the agent"
    (tmp_path / "a.go").touch()
    wait_gone(pid_a)  # run a ends while no agent is up
    agent.start()

    async def collect() -> None:
        c = agent.client()
        a = await wait_final(c, "a@1")
        assert a["state"] == "succeeded" and await c.output("a@1", 1) == "a\n"
        assert (await c.run("b@1", 1))["state"] == "running"  # adopted, not failed
        (tmp_path / "b.go").touch()
        b = await wait_final(c, "b@1")
        assert b["state"] == "succeeded" and await c.output("b@1", 1) == "b\n"
        await c.close()

    run_async(collect)


def test_a_run_whose_processes_died_with_the_agent_is_failed(
    agent: Agent, tmp_path: Path  # noqa: F811
) -> None:
    async def dispatch() -> int:
        c = agent.client()
        await c.dispatch(order("lost@1", ["sleep", "300"]))

        async def has_pid() -> bool:
            return (await c.run("lost@1", 1))["pid"] is not None

        await wait_for(has_pid, "the job's pid")
        pid = (await c.run("lost@1", 1))["pid"]
        await c.close()
        return pid

    job_pid = run_async(dispatch)
    supervisor = psutil.Process(job_pid).parent()
    assert supervisor is not None
    assert " ".join(supervisor.cmdline()).startswith("hasched supervisor "), supervisor.cmdline()
    # What a machine crash or a cgroup kill does: everything dies at once.
    agent.kill9()
    supervisor.kill()
    os.killpg(job_pid, signal.SIGKILL)
    wait_gone(supervisor.pid)
    wait_gone(job_pid)
    agent.start()

    async def check() -> None:
        c = agent.client()
        run = await wait_final(c, "lost@1")
        assert run["state"] == "failed"
        assert "agent restarted while the run was in flight" in run["reason"]
        assert "process is gone" in run["reason"]
        assert any(r["run_id"] == "lost@1" for r in await c.runs(unacked=True))
        await c.close()

    run_async(check)


def test_bad_config_is_one_line_and_exit_2(tmp_path: Path) -> None:
    state = tmp_path / "state"
    config = tmp_path / "agent.toml"
    config.write_text(f'[agent]\nstate_dir = "{state}"\ntoken_file = "/dev/null"\n'
                      'output_limit = "lots"\n')
    proc = subprocess.run(
        [sys.executable, "-m", "scheduler.cli.main", "agent", "run", "--config", str(config)],
        capture_output=True, text=True, cwd=REPO, timeout=DEADLINE,
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr
    assert lines[0].startswith(f"{config}:4: ") and "output_limit" in lines[0]
    assert not state.exists()


def test_acknowledged_runs_are_forgotten_after_the_retention(
    agent_factory: Callable[..., Agent],  # noqa: F811
) -> None:
    short = agent_factory(retention='"2s"')

    async def body() -> None:
        c = short.client()
        await c.dispatch(order("old@1", ["echo", "bye"]))
        await c.dispatch(order("kept@1", ["true"]))
        await wait_final(c, "old@1")
        await wait_final(c, "kept@1")
        rundir = next((short.state_dir / "output").glob("old@1.1"))
        await c.ack("old@1", 1, epoch=1)

        async def forgotten() -> bool:
            return await c.run("old@1", 1) is None

        await wait_for(forgotten, "the acknowledged run to be purged")
        assert not rundir.exists()
        assert (await c.run("kept@1", 1)) is not None  # not acknowledged: kept
        await c.close()

    run_async(body)
