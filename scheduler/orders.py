"""The orders people give through the API: run a job now, pause, resume, cancel a run. Each is
checked, done, and recorded in the audit trail (scheduler.audit) with who gave it, the record
written in the same ledger transaction as the change it records."""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine, Mapping
from typing import Any

from scheduler import audit
from scheduler import planner as planning
from scheduler.agents import AgentPool
from scheduler.audit import Actor
from scheduler.ledger import BatchWriter, Change, Ledger, nominal_iso
from scheduler.progress import RunMover
from scheduler.runs import CANCELLED, OPEN_STATES, SCHEDULED, Run
from scheduler.service import Conflict, NotFound
from scheduler.times import utc_now

log = logging.getLogger("hasched.scheduler")

Spawn = Callable[[Coroutine[Any, Any, None]], None]
REQUESTED = "requested"  # a cancel's outcome when the agent is ending the run


class Orders:
    def __init__(self, ledger: Ledger, writer: BatchWriter,  # noqa: PLR0913 - its collaborators, given by daemon.py, which wires the parts
                 jobs: Callable[[], Mapping[str, Any]], pool: AgentPool, mover: RunMover,
                 spawn: Spawn, refuse_on_standby: Callable[[], None]) -> None:
        """`refuse_on_standby()` raises NotActive when this scheduler is not active (the
        daemon's, which says where the active is)."""
        self.ledger, self.writer, self.jobs = ledger, writer, jobs
        self.pool, self.mover, self.spawn = pool, mover, spawn
        self.refuse_on_standby = refuse_on_standby

    def _job(self, name: str) -> Any:
        job = self.jobs().get(name)
        if job is None:
            raise NotFound(f"no job {name!r}")
        return job

    async def run_now(self, name: str, by: Actor) -> Run | None:
        """A manual run of a job, now; the run as created."""
        job = self._job(name)
        self.refuse_on_standby()
        unfinished = self.ledger.open_runs(name) if job.concurrency == "forbid" else []
        if unfinished:
            r = unfinished[-1]
            raise Conflict(f"job {name!r} has an unfinished run {r.run_id} ({r.state}) "
                           "and concurrency=forbid: no manual run started")
        t = utc_now().replace(microsecond=0)
        rid = planning.manual_run_id(name, t)
        await self.writer.write([
            Change("create", rid, 1, name, {"nominal": nominal_iso(t), "manual": 1,
                                            "agent": self.pool.pick(job)}),
            audit.entry(by, "run", name, rid)])
        log.info("job %s: manual run %s by %s", name, rid, by.name)
        row = self.ledger.get_run(rid)
        if row and row.state == SCHEDULED:
            self.spawn(self.mover.advance(row))
        return row

    async def set_paused(self, name: str, paused: bool, by: Actor) -> None:
        self._job(name)
        self.refuse_on_standby()  # a standby's pause would lie dormant until it is promoted
        was = bool(self.ledger.job_state(name).get("paused"))
        action = "pause" if paused else "resume"
        await self.writer.write([
            Change("job", job=name, fields={"paused": paused}),
            audit.entry(by, action, name, detail=f"already {action}d" if was == paused else None)])
        log.info("job %s %sd by %s", name, action, by.name)
        if paused:
            await self.mover.recall_sent_ahead(name)

    async def cancel(self, run_id: str, by: Actor) -> tuple[Run, str]:
        """End a run's latest attempt (RunMover.cancel); the run and the outcome: "cancelled"
        (it had not been sent: ended in the ledger) or "requested" (its agent is ending it)."""
        run = self.ledger.get_run(run_id)
        if run is None:
            raise NotFound(f"no run {run_id!r}")
        self.refuse_on_standby()
        if run.state not in OPEN_STATES:
            raise Conflict(f"run {run_id} attempt {run.attempt} already ended ({run.state}): "
                           "nothing to cancel")

        def record(r: Run) -> list[Change]:
            where = f" on agent {r.agent}" if r.state != SCHEDULED and r.agent else ""
            return [audit.entry(by, "cancel", r.job, r.run_id,
                                f"attempt {r.attempt}, {r.state}{where}")]

        before, why = await self.mover.cancel(run.key, f"cancelled by {by.name}", record)
        if before is None or before.state not in OPEN_STATES:
            raise Conflict(f"run {run_id} attempt {run.attempt} ended meanwhile: nothing to "
                           "cancel")
        if why is not None:
            raise Conflict(f"cannot cancel {run_id} attempt {run.attempt} now: {why}; "
                           "try again")
        after = self.ledger.get_attempt(*run.key) or before
        log.info("run %s attempt %s: cancel by %s (%s)", run_id, run.attempt, by.name,
                 after.state)
        return after, CANCELLED if after.state == CANCELLED else REQUESTED
