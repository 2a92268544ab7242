"""Fires: the planning loop that records due fires as runs, and the catch-up at the start of a
term (fires missed while no scheduler was active, runs left scheduled by an earlier term), both
through the misfire policy. Pure policy is the planner's (scheduler.planner); moving a recorded
run on is the run mover's (scheduler.progress)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import Any

from scheduler import planner as planning
from scheduler.agents import AgentPool
from scheduler.ledger import BatchWriter, Change, Ledger, nominal_iso, parse_time
from scheduler.progress import RunMover, Spawn
from scheduler.runs import CANCELLED, SCHEDULED
from scheduler.term import Term
from scheduler.times import utc_now

# Fires are planned this many seconds early: those that can be sent ahead reach their agent
# before their time and start there at it (progress.RunMover); the others wait for it.
DISPATCH_LEAD = 1.0


def _is_fire(job: Any, t: datetime) -> bool:
    nxt = job.trigger.next_after(t - timedelta(seconds=1))
    return nxt is not None and nominal_iso(nxt) == nominal_iso(t)


class FirePlanner:
    def __init__(self, ledger: Ledger, writer: BatchWriter, jobs: Callable[[], Mapping[str, Any]],  # noqa: PLR0913 - its collaborators, given by daemon.py, which wires the parts
                 term: Term, pool: AgentPool, mover: RunMover, spawn: Spawn,
                 dispatch_lead: float = DISPATCH_LEAD) -> None:
        self.ledger, self.writer, self.jobs, self.term = ledger, writer, jobs, term
        self.pool, self.mover, self.spawn = pool, mover, spawn
        self.dispatch_lead = dispatch_lead
        self.plan: planning.FirePlan | None = None  # the term's plan, from its catch-up on
        self._wake = asyncio.Event()

    async def plan_loop(self) -> None:
        """Record fires as they come due (dispatch_lead early), while the term is active."""
        assert self.plan is not None
        while True:
            nxt = self.plan.next_time()
            lead = timedelta(seconds=self.dispatch_lead)
            delay = 3600.0 if nxt is None else (nxt - lead - utc_now()).total_seconds()
            if delay > 0:
                self._wake.clear()
                try:
                    await asyncio.wait_for(self._wake.wait(), delay)
                except TimeoutError:
                    pass
            if not self.term.active:
                return
            jobs = self.jobs()
            await self.fire([(jobs[n], t) for n, t in self.plan.due(utc_now() + lead) if n in jobs])

    def replace_jobs(self, jobs: Mapping[str, Any]) -> None:
        """New definitions (reload): the plan follows them at once."""
        if self.term.active and self.plan is not None:
            self.plan.replace_jobs(jobs, utc_now())
            self._wake.set()

    async def fire(self, fires: list[tuple[Any, datetime]]) -> None:
        """Record due fires (one transaction), then send each on its way."""
        if not fires:
            return
        paused = self.ledger.paused_jobs()
        changes, keys = [], []
        for job, t in fires:
            nominal = nominal_iso(t)
            changes.append(Change("job", job=job.name, fields={"last_planned": nominal}))
            if job.name in paused:
                continue
            rid = planning.run_id(job.name, t)
            agent = self.pool.pick(job) if not job.after else None
            changes.append(Change("create", rid, 1, job.name,
                                  {"nominal": nominal, "agent": agent}))
            keys.append((rid, 1))
        await self.writer.write(changes)
        for key in keys:
            run = self.ledger.get_attempt(*key)
            if run and run.state == SCHEDULED:
                self.spawn(self.mover.advance(run))

    async def catch_up(self, latest: dict[str, str], now: datetime) -> None:
        """Missed fires since the latest of: each job's last planned time, the predecessor's
        last fire, when this daemon first saw the job; within the misfire grace. Then the plan
        from `now` on."""
        states = self.ledger.job_states()
        jobs = self.jobs()
        fires: list[tuple[Any, datetime]] = []
        for name, job in jobs.items():
            state = states.get(name, {})
            marks = [parse_time(t) for t in (state.get("last_planned"), state.get("first_seen"),
                                             latest.get(name)) if t]
            if latest.get(name) and not _is_fire(job, parse_time(latest[name])):
                marks.pop()  # a manual run's time is not a point of the schedule
            marks = [m for m in marks if m <= now]
            last = max(marks) if marks else now - timedelta(seconds=job.misfire.grace)
            fires += [(job, t) for t in planning.missed_fires(job, last, now)]
        await self._drop_stale(fires, now)
        await self.fire(fires)
        self.plan = planning.FirePlan()
        self.plan.load(jobs, now)

    async def _drop_stale(self, fires: list[tuple[Any, datetime]], now: datetime) -> None:
        """Runs left `scheduled` by an earlier term (this node was demoted, or stopped) are
        missed fires too: they go through the misfire policy with the fires missed now."""
        stale = [r for r in self.ledger.open_runs() if r.state == SCHEDULED]
        paused = self.ledger.paused_jobs()
        jobs = self.jobs()
        newest: dict[str, datetime] = {}
        planned = [(job.name, t) for job, t in fires if job.name not in paused]
        planned += [(r.job, parse_time(r.nominal)) for r in stale if r.planned]
        for name, t in planned:
            newest[name] = max(newest.get(name, t), t)
        drops = []
        for r in stale:
            job = jobs.get(r.job)
            if job is None:
                continue  # the run mover cancels it
            if r.planned and r.job in paused:
                # Recorded before the pause (a replica's, say) and never sent: the pause
                # holds from here on.
                drops.append(self.mover.close(r.key, CANCELLED, "job paused"))
                continue
            due = parse_time(r.nominal if r.attempt == 1 else r.scheduled_at)
            why = planning.stale_run_verdict(job, due, now, r.planned, newest.get(job.name))
            if why:
                drops.append(self.mover.close(r.key, CANCELLED, why))
        await asyncio.gather(*drops)
