"""Real hasched processes on loopback for the integration tests: agents, schedulers, a control
client, and the waits and requests that drive them. The one harness: every test module imports
from here, and conftest.py makes its fixtures.

Every daemon is started in its own session, so that a test can kill -9 it with its group (the
agent's launcher too); everything is killed at teardown. Waits poll with generous deadlines:
the machine is shared.
"""

from __future__ import annotations

import asyncio
import json
import os
import pwd
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psutil
import pytest

from scheduler.agent import containment
from scheduler.control import request
from scheduler.protocol import AgentClient, AgentUnreachable, DispatchOrder
from tests.ports import free_port

REPO = Path(__file__).resolve().parents[2]
TOKEN = "integration-agent-token-0123456789"
API_TOKEN = "integration-api-token-0123456789"  # a bare line of the tokens file: an admin
# Named tokens with roles, in every scheduler's tokens file too (scheduler/auth.py).
VIEWER, VIEWER_TOKEN = "vera-viewer", "integration-viewer-token-0123456789"
OPERATOR, OPERATOR_TOKEN = "otto-operator", "integration-operator-token-0123456789"
REPL_TOKEN = "integration-replication-token-0123456789"
DEADLINE = 60.0

__all__ = ["API_TOKEN", "DEADLINE", "OPERATOR", "OPERATOR_TOKEN", "REPL_TOKEN", "REPO", "TOKEN",
           "VIEWER", "VIEWER_TOKEN", "Agent", "Cli", "Lab", "Proc", "Scheduler",
           "agent_command", "dump", "duplicates", "free_port", "hasched", "job_toml",
           "nominal_gaps", "order", "raw", "remove_cgroups", "run_async", "wait_file",
           "wait_final", "wait_for", "wait_for_async"]


# -- waits ------------------------------------------------------------------------------------
# One signature for both: what is awaited (for the failure message), then the check, which is
# polled until it returns something truthy; that value is returned.

def wait_for(what: str, check: Callable[[], Any], deadline: float = DEADLINE,
             every: float = 0.2) -> Any:
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


async def wait_for_async(what: str, check: Callable[[], Awaitable[Any]],
                         deadline: float = DEADLINE, every: float = 0.1) -> Any:
    """wait_for with a coroutine check, from a test's own event loop."""
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        value = await check()
        if value:
            return value
        await asyncio.sleep(every)
    pytest.fail(f"timed out after {deadline:g}s waiting for {what}")


def wait_file(path: Path, deadline: float = DEADLINE) -> str:
    """The text of `path` once it exists and is not empty."""
    return wait_for(f"{path} to be written",
                    lambda: path.exists() and path.read_text(), deadline, every=0.05)


async def wait_final(client: AgentClient, run_id: str, attempt: int = 1,
                     deadline: float = DEADLINE) -> dict[str, Any]:
    """The agent's record of a run once it has left `running`."""
    last: list[dict[str, Any] | None] = [None]

    async def final() -> dict[str, Any] | None:
        try:
            last[0] = await client.run(run_id, attempt)
        except AgentUnreachable:
            last[0] = None
        return last[0] if last[0] is not None and last[0]["state"] != "running" else None

    try:
        return await wait_for_async(f"run {run_id} attempt {attempt} to finish", final, deadline)
    except pytest.fail.Exception:
        pytest.fail(f"run {run_id} attempt {attempt} not finished after {deadline:g}s: {last[0]}")


# -- processes --------------------------------------------------------------------------------

def hasched(*args: str) -> list[str]:
    return [sys.executable, "-m", "scheduler", *args]


def agent_command(config: Path) -> list[str]:
    return hasched("agent", "run", "--config", str(config), "--log-level", "debug")


class Proc:
    """A daemon in its own session, its output appended to `log`."""

    def __init__(self, name: str, argv: list[str], log: Path) -> None:
        self.name, self.argv, self.log = name, argv, log
        self.p: subprocess.Popen[bytes] | None = None

    def start(self) -> Proc:
        out = open(self.log, "ab")  # noqa: SIM115 - handed to the child
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.p = subprocess.Popen(self.argv, stdout=out, stderr=out, start_new_session=True,
                                  env=env, cwd=str(REPO))
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
        """SIGTERM, then the exit status (SIGKILL if it does not exit within 30 s)."""
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


class Agent:
    """One agent daemon with its own directory (agent.toml, token, state/, agent.log) and port;
    restartable. `settings`: more keys of its [agent] table, as TOML values (None drops one of
    the defaults below)."""

    def __init__(self, base: Path, name: str = "t1", **settings: str | None) -> None:
        self.name, self.dir = name, base
        base.mkdir(parents=True, exist_ok=True)
        self.state_dir = base / "state"
        self.port = free_port()
        self.token_file = base / "token"
        self.token_file.write_text(TOKEN + "\n")
        self.token_file.chmod(0o600)  # an agent refuses a token file others may read
        self.config = base / "agent.toml"
        # Jobs as the tests' own account (root): they write into the tests' directories.
        defaults = {"kill_grace": '"1s"', "allow_agent_account": "true",
                    "default_user": f'"{pwd.getpwuid(os.getuid()).pw_name}"'}
        lines = ["[agent]", f'name = "{name}"', f'listen = "127.0.0.1:{self.port}"',
                 f'state_dir = "{self.state_dir}"', f'token_file = "{self.token_file}"']
        lines += [f"{k} = {v}" for k, v in {**defaults, **settings}.items() if v is not None]
        self.config.write_text("\n".join(lines) + "\n")
        self.url = f"{'https' if 'tls' in settings else 'http'}://127.0.0.1:{self.port}"
        self.proc = Proc(f"agent-{name}", agent_command(self.config), base / "agent.log")

    def start(self) -> Agent:
        """Start it and wait until it listens (it fails the test, with its log, if it exits)."""
        self.proc.start()

        def listening() -> bool:
            if not self.proc.alive():
                pytest.fail(f"agent {self.name} exited with {self.proc.p and self.proc.p.poll()}"
                            f":\n{self.log()}")
            with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                return True

        wait_for(f"agent {self.name} to listen", listening, every=0.1)
        return self

    def stop(self) -> int | None:
        return self.proc.stop()

    def kill9(self) -> None:
        """kill -9 the agent and its launcher; its supervisors (own sessions) live on."""
        self.proc.kill9()

    def freeze(self) -> None:
        """SIGSTOP the agent and its launcher, as a hung node's: its port still accepts
        connections (the kernel does), nothing answers; its supervisors (own sessions) and their
        jobs go on."""
        os.killpg(self.proc.pid, signal.SIGSTOP)

    def thaw(self) -> None:
        """SIGCONT after freeze: it answers again."""
        os.killpg(self.proc.pid, signal.SIGCONT)

    def log(self) -> str:
        return self.proc.logtext()

    def client(self, token: str = TOKEN, ca: str | None = None) -> AgentClient:
        return AgentClient(self.name, self.url, token, ca=ca, timeout=10.0)

    def call(self, method: str, *args: Any, **kw: Any) -> Any:
        """One AgentClient call, in an event loop of its own."""
        async def go() -> Any:
            client = self.client()
            try:
                return await getattr(client, method)(*args, **kw)
            finally:
                await client.close()
        return asyncio.run(go())

    def runs(self) -> list[dict[str, Any]]:
        return self.call("runs", since=datetime.now(UTC) - timedelta(days=1))

    def _ours(self) -> list[psutil.Process]:
        """The live launcher and supervisors this agent started, now or before a restart: an
        exec'd one names a path of the agent's directory on its command line, a forked one
        shows only its title ("hasched supervisor RUN") but holds the agent's log open (its
        stdout and stderr, inherited)."""
        mine, out = str(self.dir), []
        for p in psutil.process_iter(["cmdline", "status"]):
            shown = " ".join(p.info["cmdline"] or [])
            if p.info["status"] == psutil.STATUS_ZOMBIE or not (
                    "scheduler.agent.supervise" in shown or shown.startswith("hasched ")):
                continue
            try:
                if mine in shown or any(f.path.startswith(mine + os.sep)
                                        for f in p.open_files()):
                    out.append(p)
            except psutil.Error:
                pass
        return out

    def supervisors(self) -> list[psutil.Process]:
        """Supervisor processes of this agent's runs (they outlive the agent). Each leads its
        own session; the launcher they are forked from does not."""
        out = []
        for p in self._ours():
            try:
                if os.getsid(p.pid) == p.pid:
                    out.append(p)
            except ProcessLookupError:
                pass
        return out

    def launcher(self) -> psutil.Process | None:
        """The agent's launcher: its child running `supervise --launcher`."""
        try:
            children = psutil.Process(self.proc.pid).children()
        except (psutil.Error, AssertionError):
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

    def kill9_with_runs(self) -> None:
        """kill -9 the agent, its launcher, every supervisor it started and their jobs."""
        self.proc.kill9()
        for sup in self._ours():
            try:
                for child in sup.children(recursive=True):
                    os.killpg(child.pid, signal.SIGKILL)
                sup.kill()
            except (psutil.Error, ProcessLookupError, PermissionError):
                pass

    def cleanup(self) -> None:
        """Leave nothing behind: no process, no cgroup."""
        self.kill9_with_runs()
        remove_cgroups(self.name, self.state_dir)


def remove_cgroups(name: str, state_dir: Path) -> None:
    """What an agent killed by a test left of its cgroups (a stopped one removes them)."""
    containment.prepare(name, str(state_dir)).remove(kill=True)


class Scheduler:
    """One scheduler daemon. `peers`: the other schedulers' URLs, for a [replication] table
    (with `replication`: more of its settings as TOML values, e.g. mode='"async"')."""

    def __init__(self, root: Path, name: str, agents: list[Agent], jobs_dir: Path,  # noqa: PLR0913 - the lab's settings of one daemon
                 run_dir: Path | None = None, port: int | None = None,
                 peers: list[str] | None = None, **replication: str) -> None:
        self.name = name
        self.dir = root / f"sched-{name}"
        self.dir.mkdir(parents=True)
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.run_dir = run_dir or self.dir / "run"
        self.socket = self.run_dir / "control.sock"
        self.pidfile = self.dir / "scheduler.pid"
        (self.dir / "api-tokens").write_text(
            f"{API_TOKEN}\n{VIEWER} viewer {VIEWER_TOKEN}\n{OPERATOR} operator {OPERATOR_TOKEN}\n")
        (self.dir / "api-tokens").chmod(0o600)
        lines = [
            "[scheduler]", f'listen = "127.0.0.1:{self.port}"',
            f'state_dir = "{self.dir / "state"}"', f'run_dir = "{self.run_dir}"',
            f'jobs_dir = "{jobs_dir}"', f'api_tokens_file = "{self.dir / "api-tokens"}"',
            'log_level = "debug"', ""]
        for a in agents:
            lines += [f"[agents.{a.name}]", f'url = "{a.url}"',
                      f'token_file = "{a.token_file}"', 'labels = ["workers"]', ""]
        if peers is not None:
            (self.dir / "replication-token").write_text(REPL_TOKEN + "\n")
            (self.dir / "replication-token").chmod(0o600)
            lines += ["[replication]", f"peers = {json.dumps(peers)}",
                      f'token_file = "{self.dir / "replication-token"}"']
            lines += [f"{k} = {v}" for k, v in replication.items()] + [""]
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

    def cli(self, home: Path, token: str = API_TOKEN) -> Cli:
        """The `hasched` CLI against this scheduler, presenting `token`."""
        token_file = home / f"token-{abs(hash(token))}"
        home.mkdir(parents=True, exist_ok=True)
        token_file.write_text(token + "\n")
        token_file.chmod(0o600)
        return Cli(f"http://127.0.0.1:{self.port}", token_file, home)

    def api(self, method: str, path: str, token: str = API_TOKEN) -> tuple[int, Any]:
        """One REST call: (status, JSON or text body)."""
        req = urllib.request.Request(self.url + path, method=method,
                                     data=b"" if method == "POST" else None)
        req.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(req, timeout=DEADLINE) as resp:
                body = resp.read()
                status = resp.status
        except urllib.error.HTTPError as e:
            body, status = e.read(), e.code
        try:
            return status, json.loads(body)
        except ValueError:
            return status, body.decode(errors="replace")

    def output_file(self, row: dict[str, Any], stream: str) -> Path:
        """Where this scheduler keeps a collected run's stream (output_path is relative to its
        state_dir/output)."""
        return self.dir / "state" / "output" / f"{row['output_path']}.{stream}"

    def replication(self) -> dict[str, Any]:
        return self.status()["replication"]

    def paused(self) -> set[str]:
        conn = sqlite3.connect(f"file:{self.ledger_path}?mode=ro", uri=True, timeout=30)
        try:
            return {r[0] for r in conn.execute("SELECT job FROM job_state WHERE paused != 0")}
        finally:
            conn.close()

    def status(self) -> dict[str, Any]:
        return self.ctl({"op": "status"})

    def ledger_rows(self, job: str | None = None) -> list[dict[str, Any]]:
        conn = sqlite3.connect(f"file:{self.ledger_path}?mode=ro", uri=True, timeout=30)
        conn.row_factory = sqlite3.Row
        try:
            sql, args = "SELECT * FROM runs", ()
            if job:
                sql, args = "SELECT * FROM runs WHERE job = ?", (job,)
            return [dict(r) for r in conn.execute(sql, args)]
        finally:
            conn.close()


class Cli:
    """The `hasched` CLI as a user runs it: a new process per call, the token in a file named
    by the environment (never on the command line)."""

    def __init__(self, url: str, token_file: Path, home: Path) -> None:
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("HASCHED_")}
        self.env.update(HASCHED_URL=url, HASCHED_TOKEN_FILE=str(token_file),
                        XDG_CONFIG_HOME=str(home))

    def argv(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "scheduler", *args]

    def __call__(self, *args: str, ok: bool = True, env: dict[str, str] | None = None
                 ) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(self.argv(*args), capture_output=True, text=True,
                              env={**self.env, **(env or {})}, cwd=REPO, timeout=120)
        if ok:
            assert proc.returncode == 0, f"hasched {' '.join(args)}: {proc.stderr}{proc.stdout}"
        return proc

    def json(self, *args: str) -> Any:
        return json.loads(self(*args, "--json").stdout)

    def popen(self, *args: str) -> subprocess.Popen[str]:
        """A long-running call (runs logs --follow), its stdout a pipe read line by line."""
        return subprocess.Popen(self.argv(*args), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, env=self.env, cwd=REPO)


class Lab:
    """Agents and schedulers of one test, in one tmp dir; everything is killed at teardown."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.jobs_dir = root / "jobs"
        self.jobs_dir.mkdir()
        self.agents: list[Agent] = []
        self.schedulers: list[Scheduler] = []

    def agent(self, name: str, **settings: str | None) -> Agent:
        """A started agent; `settings` as for Agent."""
        a = Agent(self.root / f"agent-{name}", name, **{"kill_grace": '"2s"', **settings})
        self.agents.append(a)
        return a.start()

    def scheduler(self, name: str = "a", role: str = "active",
                  run_dir: Path | None = None) -> Scheduler:
        s = Scheduler(self.root, name, self.agents, self.jobs_dir, run_dir)
        self.schedulers.append(s)
        return s.start(role)

    def pair(self, **replication: str) -> tuple[Scheduler, Scheduler]:
        """Two schedulers that replicate each other ([replication] peers = the other), both
        started standby: promote one (`ctl promote`) and the other follows it."""
        ports = free_port(), free_port()
        urls = [f"http://127.0.0.1:{p}" for p in ports]
        pair = tuple(Scheduler(self.root, name, self.agents, self.jobs_dir, port=port,
                               peers=[urls[1 - i]], **replication)
                     for i, (name, port) in enumerate(zip("ab", ports, strict=True)))
        self.schedulers += pair
        for s in pair:
            s.start("standby")
        return pair[0], pair[1]

    def failover_pair(self) -> tuple[Scheduler, Scheduler]:
        """Schedulers A and B with their own state (no replication), both started standby, then
        A promoted at epoch 1: a failover test kills A and promotes B at epoch 2."""
        a = self.scheduler("a", role="standby")
        b = self.scheduler("b", role="standby")
        answer = a.ctl({"op": "promote", "epoch": 1})
        assert answer["role"] == "active", answer
        return a, b

    def job(self, name: str, body: str) -> None:
        (self.jobs_dir / f"{name}.toml").write_text(body)

    def agent_runs(self, job: str) -> list[dict[str, Any]]:
        return [r for a in self.agents for r in a.runs() if r["job"] == job]

    def teardown(self) -> None:
        for s in self.schedulers:
            if s.proc:
                s.proc.kill9()
        for a in self.agents:
            a.cleanup()

    def logs(self) -> str:
        parts = []
        for s in self.schedulers:
            if s.proc:
                parts.append(f"--- scheduler {s.name}\n{s.proc.logtext()[-4000:]}")
        for a in self.agents:
            parts.append(f"--- agent {a.name}\n{a.log()[-2000:]}")
        return "\n".join(parts)


# -- requests and data ------------------------------------------------------------------------

def run_async(body: Callable[[], Awaitable[Any]]) -> Any:
    return asyncio.run(body())


def order(run_id: str, command: list[str], *, attempt: int = 1, epoch: int = 1,
          job: str = "job", **kw: Any) -> DispatchOrder:
    return DispatchOrder(run_id=run_id, job=job, attempt=attempt, epoch=epoch,
                         command=command, **kw)


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


def nominal_gaps(nominals: list[str], step: float) -> list[tuple[str, str]]:
    """Pairs of consecutive nominal times further apart than `step` seconds."""
    ts = sorted(datetime.fromisoformat(n) for n in set(nominals))
    return [(a.isoformat(), b.isoformat()) for a, b in zip(ts, ts[1:], strict=False)
            if (b - a).total_seconds() > step + 0.001]


def duplicates(items: list[str]) -> list[str]:
    seen: set[str] = set()
    return sorted({x for x in items if x in seen or seen.add(x)})  # type: ignore[func-returns-value]


def dump(obj: Any) -> str:
    return json.dumps(obj, indent=1, default=str)[:3000]


def job_toml(name: str, command: str, misfire: str | None = None, **fields: str | None) -> str:
    """A job file (the format of scheduler/jobtable.py): `command` for /bin/sh -c, `misfire`
    a policy (with a 5 minute grace), `fields` string fields (every, agent, pool, ...)."""
    lines = [f"[job.{name}]", f"command = {json.dumps(['/bin/sh', '-c', command])}"]
    lines += [f"{key} = {json.dumps(value)}" for key, value in fields.items() if value]
    if misfire:
        lines.append(f'misfire = {{ policy = "{misfire}", grace = "5m" }}')
    return "\n".join(lines) + "\n"
