"""Real `hasched agent run` processes for integration tests, and helpers to drive them.

Fixtures here are imported by the test_agent_*.py modules (conftest.py belongs to another part).
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
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from scheduler.agent import containment
from scheduler.protocol import AgentClient, AgentUnreachable, DispatchOrder

REPO = Path(__file__).resolve().parents[2]
TOKEN = "agent-test-token-5f1c0e-0123456789abcdef"
DEADLINE = 30.0  # generous: the machine is shared and loaded


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def agent_command(config: Path) -> list[str]:
    return [sys.executable, "-m", "scheduler.cli.main", "agent", "run", "--config", str(config),
            "--log-level", "debug"]


class Agent:
    """One agent daemon with its own state dir and port; restartable."""

    def __init__(self, base: Path, **settings: str):
        self.base = base
        base.mkdir(parents=True, exist_ok=True)
        self.state_dir = base / "state"
        self.port = free_port()
        self.token_file = base / "agent.token"
        self.token_file.write_text(TOKEN + "\n")
        self.token_file.chmod(0o600)  # an agent refuses a token file others may read
        self.config = base / "agent.toml"
        lines = [
            "[agent]",
            'name = "t1"',
            f'listen = "127.0.0.1:{self.port}"',
            f'state_dir = "{self.state_dir}"',
            f'token_file = "{self.token_file}"',
        ]
        # Jobs as the tests' own account (root): they write into the tests' directories.
        me = pwd.getpwuid(os.getuid()).pw_name
        defaults = {"kill_grace": '"1s"', "allow_agent_account": "true",
                    "default_user": f'"{me}"'}
        lines += [f"{k} = {v}" for k, v in {**defaults, **settings}.items() if v is not None]
        self.config.write_text("\n".join(lines) + "\n")
        scheme = "https" if "tls" in settings else "http"
        self.url = f"{scheme}://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> None:
        self.starts += 1
        log = open(self.base / f"agent-{self.starts}.log", "wb")
        self.proc = subprocess.Popen(agent_command(self.config), stdout=log, stderr=log,
                                     cwd=REPO)
        log.close()
        deadline = time.monotonic() + DEADLINE
        while True:
            if self.proc.poll() is not None:
                raise AssertionError(f"agent exited with {self.proc.returncode}:\n{self.log()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"agent not listening after {DEADLINE}s:\n{self.log()}")
            time.sleep(0.1)

    def log(self) -> str:
        return (self.base / f"agent-{self.starts}.log").read_text(errors="replace")

    def stop(self) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=DEADLINE)

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(timeout=DEADLINE)

    def client(self, token: str = TOKEN, ca: str | None = None) -> AgentClient:
        return AgentClient("t1", self.url, token, ca=ca, timeout=10.0)

    def _supervise_processes(self) -> list[psutil.Process]:
        """Supervisors (forked by the launcher, or exec'd) and the launcher of this agent."""
        marker = str(self.state_dir / "output")
        try:  # a forked supervisor's title names its run directory only: "hasched supervisor X"
            rundirs = set(os.listdir(marker))
        except OSError:
            rundirs = set()
        out = []
        for p in psutil.process_iter(["cmdline", "status"]):
            cmd = " ".join(p.info["cmdline"] or []).split()  # a title is one padded argument
            if p.info["status"] == psutil.STATUS_ZOMBIE:
                continue
            if (("scheduler.agent.supervise" in cmd or cmd[:2] == ["hasched", "launcher"])
                    and any(a.startswith(marker) for a in cmd)):
                out.append(p)
            elif cmd[:2] == ["hasched", "supervisor"] and cmd[2:3] and cmd[2] in rundirs:
                out.append(p)
        return out

    def supervisors(self) -> list[psutil.Process]:
        """Supervisor processes of this agent's runs (they outlive the agent). Each leads its
        own session; the launcher they are forked from does not."""
        out = []
        for p in self._supervise_processes():
            try:
                if os.getsid(p.pid) == p.pid:
                    out.append(p)
            except ProcessLookupError:
                pass
        return out

    def launcher(self) -> psutil.Process | None:
        """The agent's launcher: its child running `supervise --launcher`."""
        assert self.proc is not None
        try:
            children = psutil.Process(self.proc.pid).children()
        except psutil.Error:
            return None
        for p in children:
            try:
                shown = " ".join(p.cmdline())  # "hasched launcher DIR" once it has set its title
                if (("--launcher" in shown or shown.startswith("hasched launcher"))
                        and p.status() != psutil.STATUS_ZOMBIE):
                    return p
            except psutil.Error:
                pass
        return None

    def cleanup(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        for sup in self._supervise_processes():  # and their jobs: leave no process behind
            try:
                for child in sup.children(recursive=True):
                    os.killpg(child.pid, signal.SIGKILL)
                sup.kill()
            except (psutil.Error, ProcessLookupError, PermissionError):
                pass
        remove_cgroups("t1", self.state_dir)


def remove_cgroups(name: str, state_dir: Path) -> None:
    """What an agent killed by a test left of its cgroups (a stopped one removes them)."""
    containment.prepare(name, str(state_dir)).remove(kill=True)


@pytest.fixture
def agent_factory(tmp_path: Path) -> Iterator[Callable[..., Agent]]:
    agents: list[Agent] = []

    def make(**settings: str) -> Agent:
        a = Agent(tmp_path / f"agent{len(agents)}", **settings)
        agents.append(a)
        a.start()
        return a

    yield make
    for a in agents:
        a.cleanup()


@pytest.fixture
def agent(agent_factory: Callable[..., Agent]) -> Agent:
    return agent_factory()


def run_async(body: Callable[[], Awaitable[Any]]) -> Any:
    return asyncio.run(body())


def order(run_id: str, command: list[str], *, attempt: int = 1, epoch: int = 1,
          job: str = "job", **kw: Any) -> DispatchOrder:
    return DispatchOrder(run_id=run_id, job=job, attempt=attempt, epoch=epoch,
                         command=command, **kw)


async def wait_final(client: AgentClient, run_id: str, attempt: int = 1,
                     deadline: float = DEADLINE) -> dict[str, Any]:
    """Poll until the run leaves `running`; fail clearly if it does not within the deadline."""
    end = time.monotonic() + deadline
    last: dict[str, Any] | None = None
    while time.monotonic() < end:
        try:
            last = await client.run(run_id, attempt)
        except AgentUnreachable:
            last = None
        if last is not None and last["state"] != "running":
            return last
        await asyncio.sleep(0.1)
    raise AssertionError(f"run {run_id} attempt {attempt} not finished after {deadline}s: {last}")


async def wait_for(predicate: Callable[[], Awaitable[bool]], what: str,
                   deadline: float = DEADLINE) -> None:
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        if await predicate():
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"gave up waiting for {what} after {deadline}s")


def wait_file(path: Path, deadline: float = DEADLINE) -> str:
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        if path.exists() and path.read_text():
            return path.read_text()
        time.sleep(0.05)
    raise AssertionError(f"{path} not written after {deadline}s")


@pytest.fixture(scope="module")
def shared_agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Agent]:
    """One agent for the tests of a module that do not restart it (starting one costs ~1 s)."""
    a = Agent(tmp_path_factory.mktemp("agent"), output_limit='"4KiB"')
    a.start()
    yield a
    a.cleanup()


def raw(agent: Agent, method: str, path: str, body: bytes | None = None,
        token: str | None = TOKEN) -> tuple[int, Any]:
    """A bare HTTP request, for what AgentClient would never send."""
    req = urllib.request.Request(agent.url + path, data=body, method=method)
    if token is not None:
        req.add_header("Authorization", f"Bearer {token}")
    if body is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=DEADLINE) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())
