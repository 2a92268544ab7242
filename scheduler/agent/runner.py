"""Starts a supervisor per run, watches them, and writes their outcome into the store.

A supervisor is identified by its pid AND its create time, because after an agent restart the
pid alone may belong to some unrelated process by now.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

import scheduler
from scheduler.agent.store import RunRecord, Store
from scheduler.protocol import (
    CANCELLED,
    FAILED,
    SUCCEEDED,
    TIMED_OUT,
    DispatchOrder,
    iso,
    utc_now,
)

log = logging.getLogger("hasched.agent")

RESTART_REASON = "agent restarted while the run was in flight: its process is gone"
POLL_INTERVAL = 0.25
STOP_SIGNALS = {signal.SIGTERM, signal.SIGINT}
PACKAGE_ROOT = str(Path(scheduler.__file__).resolve().parents[1])


def format_duration(seconds: float) -> str:
    """90 -> "1m30s", 7200 -> "2h": the same notation as the configuration files."""
    if seconds != int(seconds) or seconds < 1:
        return f"{seconds:g}s"
    rest, out = int(seconds), ""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if rest >= size:
            out += f"{rest // size}{unit}"
            rest %= size
    return out


def outcome(result: dict[str, Any], timeout: float | None) -> tuple[str, str | None]:
    """(state, reason) from a supervisor's result.json."""
    if result.get("error"):
        return FAILED, str(result["error"])
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
    popen: subprocess.Popen[bytes] | None  # None when adopted after an agent restart
    pid: int
    ctime: float


def process_alive(pid: int | None, ctime: float | None) -> bool:
    if not pid or ctime is None:
        return False
    try:
        p = psutil.Process(pid)
        return abs(p.create_time() - ctime) < 0.01 and p.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


class Runner:
    def __init__(self, store: Store, *, output_limit: int, kill_grace: float):
        self.store = store
        self.output_limit = output_limit
        self.kill_grace = kill_grace
        self.tracked: dict[tuple[str, int], Tracked] = {}
        self._task: asyncio.Task[None] | None = None

    # -- starting -----------------------------------------------------------------------------
    def start(self, order: DispatchOrder) -> RunRecord:
        """Record the run durably, then start its supervisor. The caller checked duplicates."""
        rec = self.store.insert(
            run_id=order.run_id, attempt=order.attempt, job=order.job, epoch=order.epoch,
            timeout=order.timeout,
        )
        rundir = Path(rec.rundir)
        try:
            rundir.mkdir(mode=0o700, exist_ok=True)
            spec = order.to_json() | {
                "output_limit": self.output_limit, "kill_grace": self.kill_grace,
            }
            (rundir / "spec.json").write_text(json.dumps(spec))
            env = dict(os.environ)
            env["PYTHONPATH"] = os.pathsep.join(
                p for p in (PACKAGE_ROOT, env.get("PYTHONPATH")) if p
            )
            # Spawned with TERM and INT blocked (the mask survives exec) until the supervisor
            # has its handlers: a cancel that comes right after the dispatch must not kill it.
            old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
            try:
                with open(rundir / "supervisor.log", "ab") as errlog:
                    popen = self._spawn(rundir, env, errlog)
            finally:
                signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
            ctime = psutil.Process(popen.pid).create_time()
        except (OSError, psutil.Error) as e:
            reason = f"cannot start the run's supervisor: {e}"
            self.store.update(rec.run_id, rec.attempt, state=FAILED, reason=reason,
                              finished_at=iso(utc_now()))
            log.error("run %s attempt %d: %s", rec.run_id, rec.attempt, reason)
            return self.store.get(rec.run_id, rec.attempt) or rec
        self.store.update(rec.run_id, rec.attempt, sup_pid=popen.pid, sup_ctime=ctime)
        rec = self.store.get(rec.run_id, rec.attempt) or rec
        self.tracked[rec.key] = Tracked(rec, popen, popen.pid, ctime)
        log.info("run %s attempt %d started: %s", rec.run_id, rec.attempt,
                 " ".join(order.command)[:200])
        return rec

    @staticmethod
    def _spawn(rundir: Path, env: dict[str, str], errlog: Any) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [sys.executable, "-m", "scheduler.agent.supervise", str(rundir)],
            stdin=subprocess.DEVNULL, stdout=errlog, stderr=errlog, cwd="/", env=env,
            start_new_session=True,  # its own session: it outlives the agent
        )

    # -- agent start ----------------------------------------------------------------------------
    def recover(self) -> None:
        """Account for every run the store says is running: collect, adopt, or fail it."""
        for rec in self.store.running():
            result = self._read_result(rec)
            if result is not None:
                self._finish(rec, result)
            elif process_alive(rec.sup_pid, rec.sup_ctime):
                assert rec.sup_pid is not None and rec.sup_ctime is not None
                self.tracked[rec.key] = Tracked(rec, None, rec.sup_pid, rec.sup_ctime)
                log.info("run %s attempt %d: still running, supervisor %d adopted",
                         rec.run_id, rec.attempt, rec.sup_pid)
            else:
                self._fail(rec, RESTART_REASON)

    # -- watching -----------------------------------------------------------------------------
    def _read_result(self, rec: RunRecord) -> dict[str, Any] | None:
        try:
            return json.loads((Path(rec.rundir) / "result.json").read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as e:
            return {"error": f"unreadable result.json: {e}"}

    def _fail(self, rec: RunRecord, reason: str) -> None:
        self.store.update(rec.run_id, rec.attempt, state=FAILED, reason=reason,
                          finished_at=iso(utc_now()))
        self.tracked.pop(rec.key, None)
        log.warning("run %s attempt %d failed: %s", rec.run_id, rec.attempt, reason)

    def _finish(self, rec: RunRecord, result: dict[str, Any]) -> None:
        state, reason = outcome(result, rec.timeout)
        self.store.update(
            rec.run_id, rec.attempt, state=state, reason=reason,
            exit_code=result.get("exit_code"), pid=result.get("pid") or rec.pid,
            finished_at=result.get("finished_at") or iso(utc_now()),
            stdout_bytes=int(result.get("stdout_bytes") or 0),
            stderr_bytes=int(result.get("stderr_bytes") or 0),
            truncated=bool(result.get("truncated")),
        )
        self.tracked.pop(rec.key, None)
        log.info("run %s attempt %d %s%s", rec.run_id, rec.attempt, state,
                 f": {reason}" if reason else "")

    def poll_once(self) -> None:
        for t in list(self.tracked.values()):
            rec = t.record
            result = self._read_result(rec)
            if result is not None:
                if t.popen is not None:
                    t.popen.wait()  # it exits right after writing result.json; reap it
                self._finish(rec, result)
                continue
            if rec.pid is None:
                self._note_job_pid(t)
            gone = t.popen.poll() is not None if t.popen else not process_alive(t.pid, t.ctime)
            if gone:
                result = self._read_result(rec)  # it may have finished in between
                if result is not None:
                    self._finish(rec, result)
                else:
                    self._fail(rec, f"the run's supervisor died without a result "
                                    f"(see {rec.rundir}/supervisor.log)")

    def _note_job_pid(self, t: Tracked) -> None:
        try:
            started = json.loads((Path(t.record.rundir) / "started.json").read_text())
        except (OSError, ValueError):
            return
        pid = started.get("pid")
        if isinstance(pid, int):
            self.store.update(t.record.run_id, t.record.attempt, pid=pid)
            t.record.pid = pid

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
    def cancel(self, run_id: str, attempt: int) -> bool:
        """Ask the run's supervisor to stop it (TERM, then KILL after kill_grace)."""
        t = self.tracked.get((run_id, attempt))
        if t is None or not process_alive(t.pid, t.ctime):
            return False
        os.kill(t.pid, signal.SIGTERM)
        log.info("run %s attempt %d: cancel requested", run_id, attempt)
        return True

    def output_sizes(self, rec: RunRecord) -> tuple[int, int]:
        """Live sizes of a running run's output files."""
        sizes = []
        for stream in ("stdout", "stderr"):
            try:
                sizes.append(os.path.getsize(Path(rec.rundir) / stream))
            except OSError:
                sizes.append(0)
        return sizes[0], sizes[1]
