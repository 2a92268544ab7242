"""What the scheduler and the agent exchange: the dispatch order, the RUN record, the client.

This module is the only code the scheduler and the agent share (docs/interfaces.md, "Agent HTTP
API"). The agent validates orders with `DispatchOrder.from_json`; the scheduler talks to agents
through `AgentClient`.
"""

from __future__ import annotations

import json
import logging
import re
import ssl
from dataclasses import dataclass, field, fields
from datetime import datetime
from typing import Any
from urllib.parse import quote

from scheduler.times import parse_time, utc_iso

log = logging.getLogger("hasched.dispatch")

# Run states (docs/interfaces.md): the one definition, for the scheduler's ledger and the agent.
# SCHEDULED and DISPATCHED are the scheduler's before an agent holds the run; LOST is the
# scheduler's verdict on a run its agent does not know. An agent's record is RUNNING or one of
# the other final states (AGENT_STATES).
SCHEDULED = "scheduled"
DISPATCHED = "dispatched"
RUNNING = "running"
SUCCEEDED = "succeeded"
FAILED = "failed"
TIMED_OUT = "timed-out"
CANCELLED = "cancelled"
LOST = "lost"
STATES = (SCHEDULED, DISPATCHED, RUNNING, SUCCEEDED, FAILED, TIMED_OUT, CANCELLED, LOST)
OPEN_STATES = (SCHEDULED, DISPATCHED, RUNNING)
FINAL_STATES = (SUCCEEDED, FAILED, TIMED_OUT, CANCELLED, LOST)
AGENT_STATES = (RUNNING, SUCCEEDED, FAILED, TIMED_OUT, CANCELLED)
RETRIED_STATES = (FAILED, TIMED_OUT, LOST)  # the ends a job's retries apply to

STREAMS = ("stdout", "stderr")
# A job name, whole (fullmatch): the same rule for job files and for the agent's orders.
JOB_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
MAX_RUN_ID = 256
# A run id is a file name at the agent and a URL path segment everywhere: no '/', '..', control
# characters or spaces, nothing a path or a URL would reinterpret (planner: JOB@TIME).
RUN_ID = re.compile(rf"[A-Za-z0-9][A-Za-z0-9._:@+~=,-]{{0,{MAX_RUN_ID - 1}}}")
RUN_ID_RULE = (f"must be 1 to {MAX_RUN_ID} characters: letters, digits and ._:@+~=,- "
               f"(not first)")
# Epochs: +1 per promotion (resource-agents), so 2^53 (exact in every JSON reader) is never
# reached; an order more than MAX_EPOCH_STEP above what an agent has seen is refused (a bare
# request cannot fence every scheduler off for good). docs/interfaces.md, "Epochs".
MAX_EPOCH = 2**53
MAX_EPOCH_STEP = 1_000_000
MAX_MEMORY = 2**50  # bytes: a PiB; cgroup files take any 64-bit number, a job file should not
MIN_MEMORY = 1024 * 1024
MAX_TIMEOUT = 366 * 86400 * 10  # seconds: ten years
MAX_CPU_WEIGHT = 10_000  # cgroup v2's cpu.weight range, 1 to 10000 (100: the default share)


class ProtocolError(ValueError):
    """An order or answer that does not follow the protocol; str() is one line."""


def make_run(  # noqa: PLR0913 - keyword-only, one per field of the RUN object
    *,
    run_id: str,
    job: str,
    attempt: int,
    epoch: int,
    state: str,
    exit_code: int | None = None,
    reason: str | None = None,
    pid: int | None = None,
    started_at: str | None = None,
    finished_at: str | None = None,
    acked: bool = False,
    stdout_bytes: int = 0,
    stderr_bytes: int = 0,
    truncated: bool = False,
    stdout_dropped: int = 0,
    stderr_dropped: int = 0,
) -> dict[str, Any]:
    """The RUN object of the agent API, with every field present."""
    if state not in AGENT_STATES:
        raise ProtocolError(f"field 'state': unknown state {state!r}")
    return {
        "run_id": run_id,
        "job": job,
        "attempt": attempt,
        "epoch": epoch,
        "state": state,
        "exit_code": exit_code,
        "reason": reason,
        "pid": pid,
        "started_at": started_at,
        "finished_at": finished_at,
        "acked": acked,
        # dropped: bytes beyond the agent's output_limit, per stream (truncated: any were).
        "output": {"stdout": stdout_bytes, "stderr": stderr_bytes, "truncated": truncated,
                   "dropped": {"stdout": stdout_dropped, "stderr": stderr_dropped}},
    }


def valid_run_id(run_id: Any) -> bool:
    return isinstance(run_id, str) and RUN_ID.fullmatch(run_id) is not None


def _int_field(body: dict[str, Any], name: str, minimum: int, maximum: int = MAX_EPOCH) -> int:
    value = body.get(name)
    # bool is an int in Python; `true` is not an attempt number.
    if (not isinstance(value, int) or isinstance(value, bool)
            or not minimum <= value <= maximum):
        raise ProtocolError(f"field '{name}': must be an integer from {minimum} to {maximum}")
    return value


def _limit_field(body: dict[str, Any], name: str, minimum: int, maximum: int) -> int | None:
    return None if body.get(name) is None else _int_field(body, name, minimum, maximum)


@dataclass(frozen=True)
class DispatchOrder:
    run_id: str
    job: str
    attempt: int
    epoch: int
    command: list[str]
    env: dict[str, str] = field(default_factory=dict)
    cwd: str | None = None
    user: str | None = None
    timeout: float | None = None
    # Sent ahead: the agent records the run at once and starts it when its clock reaches this
    # (ISO UTC); None or a past time: at once.
    start_at: str | None = None
    # Limits of the run's cgroup (bytes; cgroup v2 cpu.weight): None, none asked for. An agent
    # that cannot enforce one fails the run rather than ignore it.
    memory_max: int | None = None
    cpu_weight: int | None = None

    def to_json(self) -> dict[str, Any]:
        # Not dataclasses.asdict, which deep-copies value by value (~15 us, on both sides of
        # every dispatch, against ~1 us). Only the list and the dict are mutable.
        body = {name: getattr(self, name) for name in _ORDER_FIELDS}
        body["command"], body["env"] = list(self.command), dict(self.env)
        return body

    @classmethod
    def from_json(cls, body: Any) -> DispatchOrder:
        """Validate a decoded POST /v1/runs body. Raises ProtocolError with a one-line message."""
        if not isinstance(body, dict):
            raise ProtocolError("body: must be a JSON object")
        run_id = body.get("run_id")
        if not valid_run_id(run_id):
            raise ProtocolError(f"field 'run_id': {RUN_ID_RULE}")
        job = body.get("job")
        if not isinstance(job, str) or not JOB_NAME.fullmatch(job):
            raise ProtocolError(f"field 'job': must match {JOB_NAME.pattern}")
        attempt = _int_field(body, "attempt", 1)
        epoch = _int_field(body, "epoch", 0)
        command = body.get("command")
        if (
            not isinstance(command, list)
            or not command
            or not all(isinstance(a, str) for a in command)
            or not command[0]
        ):
            raise ProtocolError("field 'command': must be a non-empty list of strings")
        env = body.get("env") or {}
        if not isinstance(env, dict) or not all(
            isinstance(k, str) and k and "=" not in k and isinstance(v, str)
            for k, v in env.items()
        ):
            raise ProtocolError("field 'env': must be an object of string names to strings")
        cwd = body.get("cwd")
        if cwd is not None and (not isinstance(cwd, str) or not cwd.startswith("/")):
            raise ProtocolError("field 'cwd': must be an absolute path or null")
        user = body.get("user")
        if user is not None and (not isinstance(user, str) or not user):
            raise ProtocolError("field 'user': must be a user name or null")
        timeout = body.get("timeout")
        if timeout is not None and (
            not isinstance(timeout, int | float) or isinstance(timeout, bool)
            or not 0 < timeout <= MAX_TIMEOUT  # NaN too
        ):
            raise ProtocolError(f"field 'timeout': must be a number of seconds from 0 to "
                                f"{MAX_TIMEOUT} (exclusive of 0), or null")
        start_at = body.get("start_at")
        if start_at is not None:
            if not isinstance(start_at, str):
                raise ProtocolError("field 'start_at': must be an ISO-8601 UTC time or null")
            try:
                start_at = utc_iso(parse_time(start_at))
            except ValueError:
                raise ProtocolError("field 'start_at': must be an ISO-8601 UTC time or null"
                                    ) from None
        memory_max = _limit_field(body, "memory_max", MIN_MEMORY, MAX_MEMORY)
        cpu_weight = _limit_field(body, "cpu_weight", 1, MAX_CPU_WEIGHT)
        return cls(run_id, job, attempt, epoch, list(command), dict(env), cwd, user, timeout,
                   start_at, memory_max, cpu_weight)


_ORDER_FIELDS = tuple(f.name for f in fields(DispatchOrder))


def parse_epoch_body(body: Any) -> int:
    """The `{"epoch": N}` body of ack, cancel and the epoch push."""
    if not isinstance(body, dict):
        raise ProtocolError("body: must be a JSON object")
    return _int_field(body, "epoch", 0)


# ---------------------------------------------------------------------------------------------
# Client


class AgentError(Exception):
    """The agent answered, but refused: `.status` is the HTTP status, str() the agent's error."""

    def __init__(self, message: str, status: int = 0):
        super().__init__(message)
        self.status = status


class StaleEpoch(AgentError):
    """The agent has seen a higher epoch than the order's: this scheduler has been superseded."""

    def __init__(self, message: str, agent_epoch: int):
        super().__init__(message, 409)
        self.agent_epoch = agent_epoch


class AgentUnreachable(Exception):
    """No answer from the agent (connection refused, timeout, TLS failure); str() is one line."""


class AgentClient:
    """Talks to one agent. Create and use it inside the running event loop that will own it."""

    def __init__(
        self, name: str, url: str, token: str, ca: str | None = None, timeout: float = 5.0,
        connect_timeout: float = 1.5,
    ):
        self.name = name
        self.url = url.rstrip("/")
        self._headers = {"Authorization": f"Bearer {token}"}
        self._ca = ca
        self._timeout = timeout
        # A dead node drops SYNs silently: without a short connect timeout every call to its
        # agent would hold a promotion (and so the failover) for the whole `timeout`.
        self._connect_timeout = min(connect_timeout, timeout)
        self._session: Any = None
        self._bad: set[str] = set()  # invalid run ids already logged

    def __repr__(self) -> str:  # never show the token
        return f"AgentClient({self.name!r}, {self.url!r})"

    def _get_session(self) -> Any:
        import aiohttp  # the agent's supervisor imports this module's siblings, not aiohttp

        if self._session is None or self._session.closed:
            ssl_ctx: Any = None
            if self._ca:
                ssl_ctx = ssl.create_default_context(cafile=self._ca)
            self._session = aiohttp.ClientSession(
                headers=self._headers,
                timeout=aiohttp.ClientTimeout(
                    total=self._timeout, sock_connect=self._connect_timeout),
                connector=aiohttp.TCPConnector(ssl=ssl_ctx if ssl_ctx else None),
            )
        return self._session

    @staticmethod
    def _run_path(run_id: str, attempt: int) -> str:
        return f"/v1/runs/{quote(run_id, safe='')}/{int(attempt)}"

    async def _call(  # noqa: PLR0913 - keyword-only options of one request
        self, method: str, path: str, *, body: Any = None, params: Any = None,
        text: bool = False, allow_404: bool = False, timeout: float | None = None,
    ) -> tuple[int, Any]:
        """One request; `timeout` (seconds, the whole request) below the client's for the
        calls that something waits on (a promotion's probe and epoch push)."""
        import aiohttp

        session = self._get_session()
        bound = self._timeout if timeout is None else min(timeout, self._timeout)
        try:
            async with session.request(
                method, self.url + path, json=body, params=params,
                timeout=aiohttp.ClientTimeout(
                    total=bound, sock_connect=min(self._connect_timeout, bound)),
            ) as resp:
                status = resp.status
                raw = await resp.text()
        except TimeoutError:
            # The kept-alive connections go too: to a dead node (or a stopped agent) each one
            # would hold the next call for its whole timeout, where a new connection fails at
            # the connect timeout (a node gone) or is refused (an agent gone).
            await self.close()
            raise AgentUnreachable(
                f"agent {self.name} ({self.url}): no answer within {bound:g}s"
            ) from None
        except aiohttp.ClientError as e:
            reason = " ".join(str(e).split()) or type(e).__name__
            raise AgentUnreachable(f"agent {self.name} ({self.url}): {reason}") from None
        if status == 404 and allow_404:
            return status, None
        if status >= 400:
            try:
                data = json.loads(raw)
            except ValueError:
                data = {}
            msg = data.get("error") if isinstance(data, dict) else None
            msg = msg or f"HTTP {status}"
            if status == 409 and isinstance(data, dict) and isinstance(data.get("epoch"), int):
                raise StaleEpoch(msg, data["epoch"])
            raise AgentError(f"agent {self.name}: {msg}", status)
        if text:
            return status, raw
        try:
            return status, json.loads(raw)
        except ValueError:
            raise AgentError(f"agent {self.name}: answer is not JSON", status) from None

    async def health(self, timeout: float | None = None) -> dict[str, Any]:
        return (await self._call("GET", "/v1/health", timeout=timeout))[1]

    async def dispatch(self, order: DispatchOrder) -> tuple[bool, dict[str, Any]]:
        """(created, RUN): created is False when the agent already had this (run_id, attempt)."""
        status, data = await self._call("POST", "/v1/runs", body=order.to_json())
        return bool(data.get("created")), data["run"]

    async def runs(
        self, *, unacked: bool = False, since: datetime | None = None,
        timeout: float | None = None,
    ) -> list[dict[str, Any]]:
        """The agent's runs, those with an invalid id left out: an agent from before ids were
        checked may hold one like '..', which no URL names; adopted, it would be asked after
        forever. Logged once per id."""
        params: dict[str, str] = {}
        if unacked:
            params["unacked"] = "1"
        if since is not None:
            params["since"] = utc_iso(since)
        runs = (await self._call("GET", "/v1/runs", params=params, timeout=timeout))[1]["runs"]
        if all(valid_run_id(r.get("run_id")) for r in runs):
            return runs
        for run in runs:
            if not valid_run_id(run.get("run_id")) and str(run.get("run_id")) not in self._bad:
                self._bad.add(str(run.get("run_id")))
                log.warning("agent %s holds a run with an invalid id %r: ignored", self.name,
                            run.get("run_id"))
        return [r for r in runs if valid_run_id(r.get("run_id"))]

    async def run(self, run_id: str, attempt: int) -> dict[str, Any] | None:
        return (await self._call("GET", self._run_path(run_id, attempt), allow_404=True))[1]

    async def output(self, run_id: str, attempt: int, stream: str = "stdout") -> str:
        path = self._run_path(run_id, attempt) + "/output"
        return (await self._call("GET", path, params={"stream": stream}, text=True))[1]

    async def ack(self, run_id: str, attempt: int, epoch: int) -> None:
        path = self._run_path(run_id, attempt) + "/ack"
        await self._call("POST", path, body={"epoch": epoch})

    async def cancel(self, run_id: str, attempt: int, epoch: int) -> dict[str, Any]:
        path = self._run_path(run_id, attempt) + "/cancel"
        return (await self._call("POST", path, body={"epoch": epoch}))[1]

    async def raise_epoch(self, epoch: int, timeout: float | None = None) -> int:
        """Tell the agent a new term began: it keeps max(its epoch, `epoch`) durably and answers
        it. Raises StaleEpoch when the agent has seen a higher one."""
        answer = await self._call("POST", "/v1/epoch", body={"epoch": epoch}, timeout=timeout)
        return int(answer[1]["epoch"])

    async def close(self) -> None:
        if self._session is not None and not self._session.closed:
            await self._session.close()
        self._session = None
