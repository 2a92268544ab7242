"""Every action x state -> the exit code the OCF 1.1 reference requires.

The agent (installed by install.sh) runs directly with an OCF environment against the real
scheduler daemon; no cluster is needed. Rows run in order: later rows see what earlier ones did.
"""

from __future__ import annotations

import signal
import subprocess
from typing import NamedTuple

import psutil
import pytest

from .conftest import Setup, daemons_of, run_agent, start_ticks, wait_for

pytestmark = pytest.mark.ocf


class Row(NamedTuple):
    action: str
    expect: int
    interval: str | None = "10000"  # recurring monitor; "0" = probe; None = no CRM_meta_*
    level: int | None = None  # OCF_CHECK_LEVEL
    params: dict | None = None  # overrides of the setup's parameters


TABLE: dict[str, list[Row]] = {
    "not configured": [
        Row("monitor", 7, interval="0"), Row("monitor", 7), Row("monitor", 7, level=10),
        Row("validate-all", 6, interval=None), Row("start", 6), Row("promote", 7),
        Row("demote", 7), Row("notify", 0), Row("reload", 1), Row("reload-agent", 0),
        Row("meta-data", 0, interval=None), Row("frobnicate", 3), Row("stop", 0),
    ],
    "stopped": [
        Row("monitor", 7, interval="0"), Row("monitor", 7), Row("monitor", 7, level=10),
        Row("monitor", 7, level=20), Row("validate-all", 0, interval=None),
        Row("validate-all", 0, interval=None, level=10), Row("promote", 7), Row("demote", 7),
        Row("reload", 1), Row("reload-agent", 0), Row("notify", 0), Row("stop", 0),
        Row("start", 5, params={"hasched": "/nonexistent/hasched"}),
        Row("start", 0), Row("monitor", 0, level=10), Row("stop", 0), Row("monitor", 7),
    ],
    "running": [
        Row("monitor", 0, interval="0"), Row("monitor", 0), Row("monitor", 0, level=10),
        Row("monitor", 0, level=20), Row("monitor", 0, params={"config": ""}),
        Row("validate-all", 0, interval=None), Row("start", 0), Row("notify", 0),
        Row("reload", 0), Row("reload-agent", 0), Row("promote", 0), Row("meta-data", 0),
        Row("stop", 0), Row("stop", 0), Row("monitor", 7),
    ],
    "standby": [
        Row("monitor", 0, interval="0"), Row("monitor", 0), Row("monitor", 0, level=10),
        Row("demote", 0), Row("start", 0), Row("monitor", 0), Row("stop", 0),
    ],
    "promoted": [
        Row("monitor", 8, interval="0"), Row("monitor", 8), Row("monitor", 8, level=10),
        Row("monitor", 8, level=20), Row("promote", 0), Row("demote", 0), Row("monitor", 0),
        Row("stop", 0), Row("monitor", 7),
    ],
    "stale pid file": [
        Row("monitor", 7, interval="0"), Row("monitor", 7), Row("monitor", 7, level=10),
        Row("promote", 7), Row("stop", 0), Row("start", 0), Row("monitor", 0, level=10),
        Row("stop", 0),
    ],
    "pid reused by another command": [
        Row("monitor", 7, interval="0"), Row("monitor", 7), Row("monitor", 7, level=20),
        Row("stop", 0), Row("start", 0), Row("monitor", 0, level=10), Row("stop", 0),
    ],
    # (no stop row: stop also ends daemons of our config that lost their PID file)
    "pid reused by a look-alike started later": [
        Row("monitor", 7, interval="0"), Row("monitor", 7), Row("monitor", 7, level=10),
    ],
    "hung (SIGSTOP)": [
        Row("monitor", 0, interval="0"), Row("monitor", 0), Row("monitor", 1, level=10),
        Row("monitor", 1, level=20), Row("start", 1), Row("stop", 0), Row("monitor", 7),
    ],
}


def agent_env(setup: Setup, row: Row, promotable: bool, configured: bool) -> dict[str, str]:
    meta = {"timeout": "60000"}
    if row.interval is not None:
        meta["interval"] = row.interval
        if promotable:
            meta["promotable"] = "true"
    else:
        meta = {}
    base = setup.params()
    if not configured:
        del base["config"]
    params = {**base, **(row.params or {})}
    env = setup.env(params, **meta)
    if row.level is not None:
        env["OCF_CHECK_LEVEL"] = str(row.level)
    return env


def start_daemon(agent, setup: Setup, promotable: bool) -> int:
    meta = {"timeout": "60000", **({"promotable": "true"} if promotable else {})}
    done = run_agent(agent, "start", setup.env(**meta))
    assert done.returncode == 0, f"start failed: {done.stderr}"
    return int(setup.pidfile.read_text().split()[0])


def spawn(argv: list[str]) -> subprocess.Popen:
    return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)


def make_state(state: str, agent, setup: Setup, witnesses: list) -> bool:
    """Bring about `state`; returns whether the resource is a promotable clone."""
    if state in ("running", "hung (SIGSTOP)"):
        pid = start_daemon(agent, setup, promotable=False)
        if state.startswith("hung"):
            psutil.Process(pid).send_signal(signal.SIGSTOP)
        return False
    if state in ("standby", "promoted"):
        start_daemon(agent, setup, promotable=True)
        if state == "promoted":
            answer = setup.ask('{"op": "promote", "epoch": 3}')
            assert answer.get("ok") and answer.get("role") == "active", answer
        return True
    if state == "stale pid file":
        gone = spawn(["true"])
        started = start_ticks(gone.pid)  # a zombie until wait(): still readable
        gone.wait()
        setup.pidfile.write_text(f"{gone.pid}\n{started}\n")
    elif state == "pid reused by another command":
        other = spawn(["sleep", "600"])
        witnesses.append(other)
        setup.pidfile.write_text(f"{other.pid}\n{start_ticks(other.pid)}\n")
    elif state == "pid reused by a look-alike started later":
        # Same command line as our daemon, but started after the recorded start time.
        lookalike = spawn(["python3", "-c", "import time; time.sleep(600)", "scheduler", "run",
                           "--config", str(setup.config)])
        witnesses.append(lookalike)
        setup.pidfile.write_text(f"{lookalike.pid}\n{start_ticks(lookalike.pid) - 6000}\n")
    return False


@pytest.mark.parametrize("state", list(TABLE))
def test_action_exit_codes(state: str, agent, setup: Setup) -> None:
    witnesses: list[subprocess.Popen] = []
    try:
        promotable = make_state(state, agent, setup, witnesses)
        wrong = []
        for row in TABLE[state]:
            env = agent_env(setup, row, promotable, configured=state != "not configured")
            done = run_agent(agent, row.action, env)
            if done.returncode != row.expect:
                wrong.append(f"{row} -> {done.returncode}; stderr: {done.stderr.strip()}")
            elif row.expect not in (0, 7, 8) and "ocf-exit-reason:" not in done.stderr:
                wrong.append(f"{row} -> {done.returncode} without an ocf-exit-reason line")
            if row.action == "stop" and done.returncode == 0:
                if daemons_of(setup.config) and not witnesses:
                    wrong.append(f"{row}: a daemon is left after stop: {daemons_of(setup.config)}")
                if setup.pidfile.exists():
                    wrong.append(f"{row}: pid file left after stop")
                if setup.socket.exists():
                    wrong.append(f"{row}: control socket left after stop")
        for proc in witnesses:
            if proc.poll() is not None:
                wrong.append(f"the unrelated process {proc.args} was killed by the agent")
        assert not wrong, f"state {state!r}:\n" + "\n".join(wrong)
    finally:
        for proc in witnesses:
            proc.kill()
            proc.wait()


def test_promote_from_promoted_keeps_epoch_and_demote_reaches_standby(agent, setup) -> None:
    start_daemon(agent, setup, promotable=True)
    setup.ask('{"op": "promote", "epoch": 3}')
    env = setup.env(timeout="30000", promotable="true")
    assert run_agent(agent, "promote", env).returncode == 0
    assert setup.ask('{"op": "status"}')["epoch"] == 3
    assert run_agent(agent, "demote", env).returncode == 0
    assert setup.ask('{"op": "status"}')["role"] == "standby"
    assert run_agent(agent, "stop", env).returncode == 0


def ignores_term(pid: int) -> bool:
    with open(f"/proc/{pid}/status") as f:
        mask = next(line.split()[1] for line in f if line.startswith("SigIgn:"))
    return bool(int(mask, 16) & (1 << (signal.SIGTERM - 1)))


def test_stop_escalates_to_kill_within_the_budget(agent, setup) -> None:
    """A process of ours that ignores TERM is killed, and stop still succeeds."""
    stubborn = spawn(["python3", "-c", "import signal, time; signal.signal(signal.SIGTERM, "
                      "signal.SIG_IGN); time.sleep(600)", "scheduler", "run", "--config",
                      str(setup.config)])
    try:
        wait_for("the stubborn process to ignore TERM", lambda: ignores_term(stubborn.pid),
                 timeout=30)
        setup.pidfile.write_text(f"{stubborn.pid}\n{start_ticks(stubborn.pid)}\n")
        done = run_agent(agent, "stop", setup.env(timeout="8000", interval="0"))
        assert done.returncode == 0, done.stderr
        assert "KILL" in done.stderr
        assert stubborn.wait(timeout=30) == -signal.SIGKILL
    finally:
        stubborn.kill()
        stubborn.wait()


def test_start_fails_with_reason_and_leaves_nothing_when_the_daemon_dies(agent, setup) -> None:
    setup.config.write_text(setup.config.read_text().replace(
        'listen = "', 'log_level = "shouting"\nlisten = "'))
    done = run_agent(agent, "start", setup.env(timeout="60000"))
    assert done.returncode == 1, done.stderr
    reasons = [ln for ln in done.stderr.splitlines() if ln.startswith("ocf-exit-reason:")]
    assert len(reasons) == 1 and "exited with status" in reasons[0], done.stderr
    assert not daemons_of(setup.config) and not setup.pidfile.exists()


@pytest.fixture
def service_user():
    """A system user for the daemon, made for this test and removed after it."""
    name = "hasched-ocf-test"
    made = subprocess.run(["useradd", "--system", "--no-create-home", "--shell",
                           "/usr/sbin/nologin", name], capture_output=True, text=True)
    assert made.returncode in (0, 9), made.stderr  # 9: it exists (left by an aborted run)
    yield name
    subprocess.run(["userdel", name], capture_output=True)


def test_user_parameter_runs_the_daemon_as_that_user(agent, setup, service_user) -> None:
    """user=: the daemon runs as that user, and root still drives it through the control socket
    (the socket admits root and the daemon's own uid)."""
    import pwd
    import shutil

    uid = pwd.getpwnam(service_user).pw_uid
    setup.root.chmod(0o755)  # mkdtemp made it 0700: the user must reach its config and dirs
    for path in ("state", "run", "jobs", "api-tokens"):
        shutil.chown(setup.root / path, user=service_user)
    env = setup.env({**setup.params(), "user": service_user}, timeout="60000")
    try:
        started = run_agent(agent, "start", env)
        assert started.returncode == 0, started.stderr
        daemons = daemons_of(setup.config)
        assert [p.uids().real for p in daemons] == [uid], \
            f"daemon uids {[p.uids().real for p in daemons]}, expected [{uid}]"
        for level in ("0", "10", "20"):
            probe = run_agent(agent, "monitor", {**env, "OCF_CHECK_LEVEL": level,
                                                 "OCF_RESKEY_CRM_meta_interval": "10000"})
            assert probe.returncode == 0, f"monitor depth {level}: {probe.stderr}"
    finally:
        stopped = run_agent(agent, "stop", env)
    assert stopped.returncode == 0, stopped.stderr
    assert not daemons_of(setup.config)


def test_primitive_whose_daemon_is_standby_fails_its_depth_10_monitor(agent, setup) -> None:
    """A primitive must schedule: a daemon left standby (superseded) is a failure to recover."""
    start_daemon(agent, setup, promotable=True)  # standby, as a clone instance before promote
    env = setup.env(timeout="20000", interval="10000")
    shallow = run_agent(agent, "monitor", {**env, "OCF_CHECK_LEVEL": "0"})
    assert shallow.returncode == 0, shallow.stderr  # depth 0: the process alone
    deep = run_agent(agent, "monitor", {**env, "OCF_CHECK_LEVEL": "10"})
    assert deep.returncode == 1, deep.stderr
    assert "ocf-exit-reason:" in deep.stderr and "not active" in deep.stderr, deep.stderr
    started = run_agent(agent, "start", setup.env(timeout="60000"))  # start as a primitive
    assert started.returncode == 0, started.stderr
    assert setup.ask('{"op": "status"}')["role"] == "active"
    assert run_agent(agent, "monitor", {**env, "OCF_CHECK_LEVEL": "10"}).returncode == 0
