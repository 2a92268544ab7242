"""Real hasched processes on loopback for integration tests: agents, schedulers, a control client.

Every process is started in its own session so that a test can kill -9 it (and its group); all
are killed at teardown. Waits are polling loops with generous deadlines: the machine is shared.
"""

from __future__ import annotations

import asyncio
import json
import os
import pwd
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psutil
import pytest

from scheduler.agent import containment
from scheduler.control import request
from scheduler.protocol import AgentClient

TOKEN = "integration-agent-token-0123456789"
API_TOKEN = "integration-api-token-0123456789"
DEADLINE = 60.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(what: str, check: Callable[[], Any], deadline: float = DEADLINE,
             every: float = 0.2) -> Any:
    """Poll `check` until it returns something truthy; fail with `what` after `deadline` s."""
    end = time.monotonic() + deadline
    last_exc: BaseException | None = None
    while time.monotonic() < end:
        try:
            value = check()
            if value:
                return value
        except Exception as e:  # a daemon still starting, a socket not there yet
            last_exc = e
        time.sleep(every)
    pytest.fail(f"timed out after {deadline:g}s waiting for {what}"
                + (f" (last error: {last_exc})" if last_exc else ""))


class Proc:
    def __init__(self, name: str, argv: list[str], log: Path) -> None:
        self.name, self.argv, self.log = name, argv, log
        self.p: subprocess.Popen[bytes] | None = None

    def start(self) -> Proc:
        out = open(self.log, "ab")  # noqa: SIM115 - handed to the child
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.p = subprocess.Popen(self.argv, stdout=out, stderr=out, start_new_session=True,
                                  env=env, cwd=str(Path(__file__).resolve().parents[2]))
        out.close()
        return self

    @property
    def pid(self) -> int:
        assert self.p is not None
        return self.p.pid

    def alive(self) -> bool:
        return self.p is not None and self.p.poll() is None

    def kill9(self) -> None:
        """SIGKILL to the process group (the daemon and whatever shares its group)."""
        if self.p is not None and self.p.poll() is None:
            try:
                os.killpg(self.p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.p.wait(30)

    def stop(self) -> int | None:
        if self.p is None:
            return None
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGTERM)
            try:
                self.p.wait(30)
            except subprocess.TimeoutExpired:
                self.kill9()
        return self.p.returncode

    def logtext(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


def hasched(*args: str) -> list[str]:
    return [sys.executable, "-m", "scheduler", *args]


class Agent:
    def __init__(self, root: Path, name: str, extra: str = "") -> None:
        self.name = name
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.dir = root / f"agent-{name}"
        self.dir.mkdir(parents=True)
        (self.dir / "token").write_text(TOKEN + "\n")
        (self.dir / "token").chmod(0o600)  # a token file others may read is refused
        (self.dir / "agent.toml").write_text(
            f'[agent]\nname = "{name}"\nlisten = "127.0.0.1:{self.port}"\n'
            f'state_dir = "{self.dir / "state"}"\ntoken_file = "{self.dir / "token"}"\n'
            'kill_grace = "2s"\nallow_agent_account = true\n'
            f'default_user = "{pwd.getpwuid(os.getuid()).pw_name}"\n' + extra)
        self.proc = Proc(f"agent-{name}", hasched("agent", "run", "--config",
                                                  str(self.dir / "agent.toml")),
                         self.dir / "agent.log")

    def start(self) -> Agent:
        self.proc.start()
        wait_for(f"agent {self.name} to answer", lambda: self.call("health"))
        return self

    def call(self, method: str, *args: Any, **kw: Any) -> Any:
        async def go() -> Any:
            client = AgentClient(self.name, self.url, TOKEN)
            try:
                return await getattr(client, method)(*args, **kw)
            finally:
                await client.close()
        return asyncio.run(go())

    def runs(self) -> list[dict[str, Any]]:
        return self.call("runs", since=datetime.now(UTC) - timedelta(days=1))

    def kill9_with_runs(self) -> None:
        """kill -9 the agent and every run supervisor and job it started (their own groups)."""
        procs = psutil.Process(self.proc.pid).children(recursive=True)
        groups = {os.getpgid(p.pid) for p in procs if p.is_running()}
        self.proc.kill9()
        for pg in groups:
            try:
                os.killpg(pg, signal.SIGKILL)
            except ProcessLookupError:
                pass


class Scheduler:
    def __init__(self, root: Path, name: str, agents: list[Agent], jobs_dir: Path,
                 run_dir: Path | None = None) -> None:
        self.name = name
        self.dir = root / f"sched-{name}"
        self.dir.mkdir(parents=True)
        self.port = free_port()
        self.run_dir = run_dir or self.dir / "run"
        self.socket = self.run_dir / "control.sock"
        self.pidfile = self.dir / "scheduler.pid"
        (self.dir / "api-tokens").write_text(API_TOKEN + "\n")
        (self.dir / "api-tokens").chmod(0o600)
        lines = [
            "[scheduler]", f'listen = "127.0.0.1:{self.port}"',
            f'state_dir = "{self.dir / "state"}"', f'run_dir = "{self.run_dir}"',
            f'jobs_dir = "{jobs_dir}"', f'api_tokens_file = "{self.dir / "api-tokens"}"',
            'log_level = "debug"', ""]
        for a in agents:
            lines += [f"[agents.{a.name}]", f'url = "{a.url}"',
                      f'token_file = "{a.dir / "token"}"', 'labels = ["workers"]', ""]
        self.config = self.dir / "scheduler.toml"
        self.config.write_text("\n".join(lines))
        self.proc: Proc | None = None
        self.ledger_path = self.dir / "state" / "ledger.sqlite"

    def start(self, role: str = "active") -> Scheduler:
        self.proc = Proc(f"sched-{self.name}", hasched(
            "scheduler", "run", "--config", str(self.config), "--role", role,
            "--pidfile", str(self.pidfile)), self.dir / "scheduler.log")
        self.proc.start()
        wait_for(f"scheduler {self.name} control socket",
                 lambda: self.pidfile.exists() and self.ctl({"op": "status"}).get("ok"))
        return self

    def ctl(self, req: dict[str, Any]) -> dict[str, Any]:
        return request(self.socket, req)

    def status(self) -> dict[str, Any]:
        return self.ctl({"op": "status"})

    def ledger_rows(self, job: str | None = None) -> list[dict[str, Any]]:
        import sqlite3

        conn = sqlite3.connect(f"file:{self.ledger_path}?mode=ro", uri=True, timeout=30)
        conn.row_factory = sqlite3.Row
        try:
            sql, args = "SELECT * FROM runs", ()
            if job:
                sql, args = "SELECT * FROM runs WHERE job = ?", (job,)
            return [dict(r) for r in conn.execute(sql, args)]
        finally:
            conn.close()


class Lab:
    """Agents and schedulers of one test, in one tmp dir; everything is killed at teardown."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.jobs_dir = root / "jobs"
        self.jobs_dir.mkdir()
        self.agents: list[Agent] = []
        self.schedulers: list[Scheduler] = []

    def agent(self, name: str, extra: str = "") -> Agent:
        """An agent; `extra`: more lines of its [agent] table."""
        a = Agent(self.root, name, extra)
        self.agents.append(a)
        return a.start()

    def scheduler(self, name: str = "a", role: str = "active",
                  run_dir: Path | None = None) -> Scheduler:
        s = Scheduler(self.root, name, self.agents, self.jobs_dir, run_dir)
        self.schedulers.append(s)
        return s.start(role)

    def job(self, name: str, body: str) -> None:
        (self.jobs_dir / f"{name}.toml").write_text(body)

    def agent_runs(self, job: str) -> list[dict[str, Any]]:
        return [r for a in self.agents for r in a.runs() if r["job"] == job]

    def teardown(self) -> None:
        for s in self.schedulers:
            if s.proc:
                s.proc.kill9()
        for a in self.agents:
            if a.proc.alive():
                a.kill9_with_runs()
            containment.prepare(a.name, str(a.dir / "state")).remove(kill=True)

    def logs(self) -> str:
        parts = []
        for s in self.schedulers:
            if s.proc:
                parts.append(f"--- scheduler {s.name}\n{s.proc.logtext()[-4000:]}")
        for a in self.agents:
            parts.append(f"--- agent {a.name}\n{a.proc.logtext()[-2000:]}")
        return "\n".join(parts)


@pytest.fixture
def lab(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Lab]:
    the_lab = Lab(tmp_path)
    yield the_lab
    rep = getattr(request.node, "rep_call", None)
    if rep is not None and rep.failed:
        print(the_lab.logs())
    the_lab.teardown()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[Any]) -> Iterator[None]:
    outcome = yield
    rep = outcome.get_result()
    if rep.when == "call":
        item.rep_call = rep  # type: ignore[attr-defined]


def nominal_gaps(nominals: list[str], step: float) -> list[tuple[str, str]]:
    """Pairs of consecutive nominal times further apart than `step` seconds."""
    ts = sorted(datetime.fromisoformat(n.replace("Z", "+00:00")) for n in set(nominals))
    return [(a.isoformat(), b.isoformat()) for a, b in zip(ts, ts[1:], strict=False)
            if (b - a).total_seconds() > step + 0.001]


def duplicates(items: list[str]) -> list[str]:
    seen: set[str] = set()
    return sorted({x for x in items if x in seen or seen.add(x)})  # type: ignore[func-returns-value]


def dump(obj: Any) -> str:
    return json.dumps(obj, indent=1, default=str)[:3000]


def job_toml(name: str, command: str, every: str | None = None, agent: str | None = None,
             pool: str | None = None, concurrency: str | None = None,
             misfire: str | None = None) -> str:
    """A job file (the format of scheduler/jobs.py)."""
    lines = [f"[job.{name}]", f"command = {json.dumps(['/bin/sh', '-c', command])}"]
    if every:
        lines.append(f'every = "{every}"')
    if agent:
        lines.append(f'agent = "{agent}"')
    if pool:
        lines.append(f'pool = "{pool}"')
    if concurrency:
        lines.append(f'concurrency = "{concurrency}"')
    if misfire:
        lines.append(f'misfire = {{ policy = "{misfire}", grace = "5m" }}')
    return "\n".join(lines) + "\n"
