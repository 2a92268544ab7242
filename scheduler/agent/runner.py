"""Starts a supervisor per run, watches them, and writes their outcome into the store.

A supervisor is identified by its pid AND its create time, because after an agent restart the
pid alone may belong to some unrelated process by now.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import json
import logging
import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scheduler.agent import cgroup
from scheduler.agent.launcher import Spawner
from scheduler.agent.procs import create_time, process_alive
from scheduler.agent.store import RunRecord, Store
from scheduler.agent.supervise import CLAIM
from scheduler.protocol import (
    CANCELLED,
    FAILED,
    SUCCEEDED,
    TIMED_OUT,
    DispatchOrder,
)
from scheduler.times import parse_time, utc_iso
from scheduler.units import format_duration

log = logging.getLogger("hasched.agent")

RESTART_REASON = "agent restarted while the run was in flight: its process is gone"
POLL_INTERVAL = 0.25
# Supervisors asked of the launcher at once (it forks them one by one): enough to keep it busy.
# The other runs due meanwhile wait in a queue served oldest nominal time first, so that past
# the machine's capacity runs start late but in order, whatever order their orders came in.
MAX_LAUNCHING = 8


def outcome(result: dict[str, Any], timeout: float | None) -> tuple[str, str | None]:
    """(state, reason) from a supervisor's result.json."""
    state, reason = _outcome(result, timeout)
    if result.get("left_running"):  # killed and still there: stuck in the kernel (state D)
        pids = " ".join(map(str, result["left_running"]))
        state = FAILED if state == SUCCEEDED else state
        reason = (f"{reason}; " if reason else "") + f"processes left running: {pids}"
    return state, reason


def _outcome(result: dict[str, Any], timeout: float | None) -> tuple[str, str | None]:
    if result.get("error"):
        return FAILED, str(result["error"])
    if result.get("oom_killed") and not result.get("timed_out"):
        code = result.get("signal") or result.get("exit_code")
        return FAILED, f"out of memory: a process was killed at memory_max (status {code})"
    if result.get("timed_out"):
        return TIMED_OUT, f"timed out after {format_duration(timeout or 0)}"
    if result.get("cancelled"):
        return CANCELLED, "cancelled"
    if result.get("signal") is not None:
        return FAILED, f"killed by signal {result['signal']}"
    code = result.get("exit_code")
    if code == 0:
        return SUCCEEDED, None
    return FAILED, f"exit status {code}"


@dataclass
class Tracked:
    record: RunRecord
    popen: subprocess.Popen[bytes] | None  # set only when the agent itself is the parent
    pid: int  # the supervisor's; 0 until it is started
    ctime: float | None
    cancel_asked: bool = False


def _log_failed_write(fut: asyncio.Future[Any]) -> None:
    if not fut.cancelled() and fut.exception() is not None:
        log.error("recording a run's state failed: %s", fut.exception())


class Runner:
    def __init__(self, store: Store, spawner: Spawner, *, output_limit: int, kill_grace: float,  # noqa: PLR0913 - the agent's run settings, keyword-only, each from its configuration
                 containment: dict[str, Any] | None = None, default_user: str | None = None,
                 allow_agent_account: bool = False):
        self.store = store
        self.spawner = spawner
        self.output_limit = output_limit
        self.kill_grace = kill_grace
        # What every run's supervisor is told besides the order (cgroup plan, account policy).
        self.containment = containment or {"kind": cgroup.PROCESS_GROUP}
        self.settings = {"output_limit": output_limit, "kill_grace": kill_grace,
                         "cgroup": self.containment, "default_user": default_user,
                         "allow_agent_account": allow_agent_account}
        self.tracked: dict[tuple[str, int], Tracked] = {}
        self.accepting: dict[tuple[str, int], asyncio.Task[RunRecord]] = {}
        self._launches: set[asyncio.Task[None]] = set()
        self._due: list[tuple[str, int, RunRecord, DispatchOrder]] = []  # heap: nominal, seq
        self._seq = itertools.count()
        # Runs sent ahead, waiting for their start_at: their timers.
        self.waiting: dict[tuple[str, int], asyncio.TimerHandle] = {}
        self._task: asyncio.Task[None] | None = None

    def _write(self, fut: asyncio.Future[Any]) -> None:
        """A write nobody waits for (it is redone from result.json after a crash)."""
        fut.add_done_callback(_log_failed_write)

    # -- starting -----------------------------------------------------------------------------
    async def start(self, order: DispatchOrder) -> tuple[bool, RunRecord]:
        """(created, record): the run is durably recorded on return when created; its
        supervisor starts right after. An order already known starts nothing."""
        key = (order.run_id, order.attempt)
        accepting = self.accepting.get(key)
        if accepting is not None:  # the same order again while the first is being recorded
            return False, await asyncio.shield(accepting)
        rec, durable = self.store.insert(
            run_id=order.run_id, attempt=order.attempt, job=order.job, epoch=order.epoch,
            timeout=order.timeout, start_at=order.start_at,
            spec=json.dumps(order.to_json()) if order.start_at else None,
        )
        # A task of its own: a client that hangs up must not leave a recorded run unstarted.
        task = asyncio.get_running_loop().create_task(self._accept(rec, durable, order))
        self.accepting[key] = task
        accepted = await asyncio.shield(task)
        return accepted is rec, accepted

    async def _accept(self, rec: RunRecord, durable: asyncio.Future[Any],
                      order: DispatchOrder) -> RunRecord:
        try:
            existing = await durable
        finally:
            self.accepting.pop(rec.key, None)
        if existing is not None:
            return existing  # known already: nothing started
        self.tracked[rec.key] = Tracked(rec, None, 0, None)
        if rec.start_at:
            self._start_when_due(rec, order)
        else:
            self._begin(rec, order)
        return rec

    def _start_when_due(self, rec: RunRecord, order: DispatchOrder) -> None:
        """Start the run when the wall clock reaches its start_at (at once if it has)."""
        assert rec.start_at is not None
        at = parse_time(rec.start_at).timestamp()
        loop = asyncio.get_running_loop()

        def due() -> None:
            left = at - time.time()
            if left > 0:  # the loop's monotonic clock and the wall clock may differ a little
                self.waiting[rec.key] = loop.call_later(left, due)
                return
            self.waiting.pop(rec.key, None)
            self._begin(rec, order)

        self.waiting[rec.key] = loop.call_later(max(0.0, at - time.time()), due)

    def _begin(self, rec: RunRecord, order: DispatchOrder) -> None:
        # The run id's tail is its nominal time (a manual run's: then a suffix): text order is
        # time order.
        heapq.heappush(self._due, (rec.run_id.rpartition("@")[2], next(self._seq), rec, order))
        self._launch_due()

    def _launch_due(self) -> None:
        loop = asyncio.get_running_loop()
        while self._due and len(self._launches) < MAX_LAUNCHING:
            _, _, rec, order = heapq.heappop(self._due)
            launch = loop.create_task(self._launch(rec, order))
            self._launches.add(launch)
            launch.add_done_callback(self._launched)

    def _launched(self, task: asyncio.Task[None]) -> None:
        self._launches.discard(task)
        self._launch_due()

    def queued(self) -> int:
        """Runs due and waiting for the launcher (past capacity, this grows)."""
        return len(self._due)

    async def finish_launches(self) -> None:
        """Start what is queued (at the agent's stop: a run accepted is started, not left to
        fail as `RESTART_REASON` at the next start)."""
        while self._due or self._launches:
            await asyncio.gather(*list(self._launches), return_exceptions=True)
            self._launch_due()

    async def _launch(self, rec: RunRecord, order: DispatchOrder) -> None:
        spec = order.to_json() | self.settings
        started = {}
        if rec.start_at:
            # Noted with the supervisor: until then a restarted agent still sees the run waiting,
            # starts it again, and the supervisors' exclusive claim lets only one run the job.
            started = {"started_at": utc_iso(), "start_at": None}
        try:
            pid, ctime, popen = await self.spawner.spawn(Path(rec.rundir), spec)
        except OSError as e:
            self._fail(rec, f"cannot start the run's supervisor: {e}")
            return
        t = self.tracked.get(rec.key)
        if t is None:
            return
        t.popen, t.pid, t.ctime = popen, pid, ctime
        if started:
            rec.started_at, rec.start_at = started["started_at"], None
        self._write(self.store.update(rec.run_id, rec.attempt, sup_pid=pid, sup_ctime=t.ctime,
                                      **started))
        if log.isEnabledFor(logging.INFO):  # the command is joined only to be logged
            log.info("run %s attempt %d started: %s", rec.run_id, rec.attempt,
                     " ".join(order.command)[:200])
        if t.cancel_asked:
            self._signal(t)

    # -- agent start ----------------------------------------------------------------------------
    def _claimant(self, rec: RunRecord, known: int | None) -> tuple[int, float] | None:
        """The live supervisor that claimed the run, when it is not the one we know of."""
        try:
            pid = json.loads((Path(rec.rundir) / CLAIM).read_text())["supervisor_pid"]
        except (OSError, ValueError, KeyError, TypeError):
            return None
        ctime = create_time(pid)
        if pid == known or ctime is None or not process_alive(pid, ctime):
            return None
        return pid, ctime

    def _adopt(self, rec: RunRecord, pid: int, ctime: float) -> None:
        self.tracked[rec.key] = Tracked(rec, None, pid, ctime)
        self._write(self.store.update(rec.run_id, rec.attempt, sup_pid=pid, sup_ctime=ctime))
        log.info("run %s attempt %d: still running, supervisor %d adopted",
                 rec.run_id, rec.attempt, pid)

    def recover(self) -> None:
        """Account for every run the store says is running: collect, adopt, or fail it."""
        for rec in self.store.running():
            result = self._read_result(rec)
            if result is not None:
                self._finish(rec, result)
            elif process_alive(rec.sup_pid, rec.sup_ctime):
                assert rec.sup_pid is not None and rec.sup_ctime is not None
                self._adopt(rec, rec.sup_pid, rec.sup_ctime)
            elif (claimant := self._claimant(rec, None)) is not None:
                self._adopt(rec, *claimant)  # the agent died before noting its supervisor
            elif rec.start_at and rec.spec and not (Path(rec.rundir) / CLAIM).exists():
                # Sent ahead and not started yet (no supervisor ever claimed it): start it at
                # its time, or at once if that has passed.
                self.tracked[rec.key] = Tracked(rec, None, 0, None)
                self._start_when_due(rec, DispatchOrder.from_json(json.loads(rec.spec)))
                log.info("run %s attempt %d: waiting to start at %s", rec.run_id, rec.attempt,
                         rec.start_at)
            else:
                self._fail(rec, RESTART_REASON)

    # -- watching -----------------------------------------------------------------------------
    def _read_result(self, rec: RunRecord) -> dict[str, Any] | None:
        try:  # os.path and open: pathlib cost more than the read, for every run at every poll
            with open(os.path.join(rec.rundir, "result.json"), "rb") as f:
                return json.loads(f.read())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as e:
            return {"error": f"unreadable result.json: {e}"}

    def _fail(self, rec: RunRecord, reason: str) -> None:
        """The run failed without its supervisor's result: whatever it left is killed."""
        try:
            left = cgroup.kill_run(self.containment, rec.rundir)
        except OSError as e:
            left = []
            log.warning("run %s attempt %d: cannot clean its cgroup up: %s", rec.run_id,
                        rec.attempt, e)
        if left:
            reason += f"; processes left running: {' '.join(map(str, left))}"
        self._write(self.store.update(rec.run_id, rec.attempt, state=FAILED, reason=reason,
                          finished_at=utc_iso()))
        self.tracked.pop(rec.key, None)
        log.warning("run %s attempt %d failed: %s", rec.run_id, rec.attempt, reason)

    def _finish(self, rec: RunRecord, result: dict[str, Any]) -> None:
        state, reason = outcome(result, rec.timeout)
        self._write(self.store.update(
            rec.run_id, rec.attempt, state=state, reason=reason,
            exit_code=result.get("exit_code"), pid=result.get("pid") or rec.pid,
            finished_at=result.get("finished_at") or utc_iso(),
            stdout_bytes=int(result.get("stdout_bytes") or 0),
            stderr_bytes=int(result.get("stderr_bytes") or 0),
            truncated=bool(result.get("truncated")),
            stdout_dropped=int(result.get("stdout_dropped") or 0),
            stderr_dropped=int(result.get("stderr_dropped") or 0),
        ))
        self.tracked.pop(rec.key, None)
        log.info("run %s attempt %d %s%s", rec.run_id, rec.attempt, state,
                 f": {reason}" if reason else "")

    def poll_once(self) -> None:
        for t in list(self.tracked.values()):
            rec = t.record
            if not t.pid:
                continue  # its supervisor is being started
            result = self._read_result(rec)
            if result is not None:
                if t.popen is not None:
                    t.popen.wait()  # it exits right after writing result.json; reap it
                self._finish(rec, result)
                continue
            gone = t.popen.poll() is not None if t.popen else not process_alive(t.pid, t.ctime)
            if gone:
                result = self._read_result(rec)  # it may have finished in between
                if result is not None:
                    self._finish(rec, result)
                elif (claimant := self._claimant(rec, t.pid)) is not None:
                    self._adopt(rec, *claimant)  # it lost the claim to another supervisor
                else:
                    self._fail(rec, f"the run's supervisor died without a result "
                                    f"(see the agent's log, or {rec.rundir}/supervisor.log)")

    def _note_job_pid(self, t: Tracked) -> None:
        try:
            with open(os.path.join(t.record.rundir, CLAIM), "rb") as f:
                started = json.loads(f.read())
        except (OSError, ValueError):
            return
        pid = started.get("pid")
        if isinstance(pid, int):
            t.record.pid = pid  # in the store with the outcome; meanwhile read from started.json

    def job_pid(self, run_id: str, attempt: int) -> int | None:
        t = self.tracked.get((run_id, attempt))
        if t is not None and t.record.pid is None:
            self._note_job_pid(t)
        return t.record.pid if t else None

    async def watch(self) -> None:
        while True:
            try:
                self.poll_once()
            except Exception:  # one bad run must not stop the watching of the others
                log.exception("error while watching runs")
            await asyncio.sleep(POLL_INTERVAL)

    def start_watching(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self.watch())

    async def stop_watching(self) -> None:
        """Stop watching; supervisors keep running and are adopted by the next agent."""
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass

    # -- cancelling -----------------------------------------------------------------------------
    def cancel_waiting(self, run_id: str, attempt: int) -> asyncio.Future[Any] | None:
        """Cancel a run sent ahead that has not started: nothing is started; the future says
        the cancellation is durable. None when the run is not waiting."""
        timer = self.waiting.pop((run_id, attempt), None)
        if timer is None:
            return None
        timer.cancel()
        self.tracked.pop((run_id, attempt), None)
        log.info("run %s attempt %d cancelled before its start time", run_id, attempt)
        return self.store.update(run_id, attempt, state=CANCELLED, finished_at=utc_iso(),
                                 reason="cancelled before its start time")

    def cancel(self, run_id: str, attempt: int) -> bool:
        """Ask the run's supervisor to stop it (TERM, then KILL after kill_grace)."""
        t = self.tracked.get((run_id, attempt))
        if t is None:
            return False
        t.cancel_asked = True  # sent as soon as its supervisor is started, if it is not yet
        log.info("run %s attempt %d: cancel requested", run_id, attempt)
        return self._signal(t) if t.pid else True

    @staticmethod
    def _signal(t: Tracked) -> bool:
        if not process_alive(t.pid, t.ctime):
            return False
        try:
            os.kill(t.pid, signal.SIGTERM)
        except ProcessLookupError:
            return False
        return True

    def output_sizes(self, rec: RunRecord) -> tuple[int, int]:
        """Live sizes of a running run's output files."""
        sizes = []
        for stream in ("stdout", "stderr"):
            try:
                sizes.append(os.path.getsize(os.path.join(rec.rundir, stream)))
            except OSError:
                sizes.append(0)
        return sizes[0], sizes[1]
