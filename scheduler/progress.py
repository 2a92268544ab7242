"""The run mover: moving a scheduled run on (wait for its time, its dependencies, a pool member
that may have run it; cancel; or dispatch) and what follows a final state (retries).

It acts on the term's behalf and asks it only two things: is the term active, and which agents
it is not sure of yet (scheduler.term). Policies are the planner's (scheduler.planner).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine, Mapping
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from scheduler import planner as planning
from scheduler.dispatch import Dispatcher
from scheduler.ledger import BatchWriter, Change, Ledger, nominal_iso, parse_time, utc_iso
from scheduler.runs import CANCELLED, OPEN_STATES, RETRIED_STATES, SCHEDULED, SUCCEEDED, Run
from scheduler.term import Term
from scheduler.times import utc_now
from scheduler.triggers import zone

log = logging.getLogger("hasched.scheduler")

Spawn = Callable[[Coroutine[Any, Any, None]], Any]  # runs it as a task of the term
RECALL_MARGIN = 0.25  # seconds: a run sent ahead and due sooner may be starting already


def _day_bounds(job: Any, day: date | None, nominal: datetime) -> tuple[datetime, datetime]:
    """UTC bounds of a local day in the job's time zone (DST-aware); None: nominal's day."""
    tz = zone(job.timezone)
    if day is None:
        day = nominal.astimezone(tz).date()
    start = datetime.combine(day, time.min, tz)
    end = datetime.combine(day + timedelta(days=1), time.min, tz)
    return start.astimezone(UTC), end.astimezone(UTC)


def _day_end(job: Any, nominal: datetime) -> datetime:
    return _day_bounds(job, None, nominal)[1]


class RunMover:
    def __init__(self, ledger: Ledger, writer: BatchWriter, jobs: Callable[[], Mapping[str, Any]],  # noqa: PLR0913 - its collaborators, given by daemon.py, which wires the parts
                 term: Term, dispatcher: Dispatcher, spawn: Spawn, metrics: Any = None,
                 clock: Callable[[], datetime] = utc_now) -> None:
        """`jobs()`: the jobs in force (a reload replaces them); `spawn(coro)` runs a task of
        the active term (cancelled at demotion)."""
        self.ledger, self.writer, self.jobs, self.term = ledger, writer, jobs, term
        self.dispatcher, self.spawn, self.metrics, self.clock = dispatcher, spawn, metrics, clock
        self._advancing: set[tuple[str, int]] = set()
        self._held: set[tuple[str, int]] = set()  # planned early, waiting for their time
        self._stopped: set[tuple[str, int]] = set()  # cancelled by someone: never moved on

    async def advance(self, run: Run) -> None:
        """Move a scheduled run on: wait, cancel, or dispatch (policies decided here)."""
        if run.key in self._advancing or run.key in self._stopped or not self.term.active:
            return
        self._advancing.add(run.key)
        try:
            await self._advance(run)
        finally:
            self._advancing.discard(run.key)

    async def _advance(self, run: Run) -> None:  # noqa: C901 - the rules a scheduled run passes before dispatch, in their order (docs/semantics.md)
        key = run.key
        job = self.jobs().get(run.job)
        if job is None:
            await self.close(key, CANCELLED, "job is no longer defined")
            return
        if run.scheduled_at and parse_time(run.scheduled_at) > self.clock():
            return  # a retry waiting for its time
        nominal = parse_time(run.nominal)
        if nominal > self.clock() and not self._sendable_ahead(job, run):
            self._hold_until(key, nominal)
            return
        unsure = self.term.unsure_members(job, run)
        if unsure:
            await self._hold(run, job, unsure)
            return
        if job.after and not run.manual:
            lookup = self._dependency_lookup(job, nominal)
            dep = planning.dependency_state(job, nominal, lookup)
            if dep == "wait":
                waiting = [d for d in job.after if lookup(d, None) != SUCCEEDED]
                if self.clock() >= _day_end(job, nominal):
                    await self.close(key, CANCELLED, "dependencies did not succeed by the end "
                                     f"of the day: {', '.join(waiting)}")
                elif run.reason != (why := f"waiting for {', '.join(waiting)}"):
                    await self.writer.write([Change("update", *key, fields={"reason": why},
                                                    when=(SCHEDULED,))])
                return
            if dep == "failed":
                failed = [d for d in job.after if lookup(d, None) == "failed"]
                await self.close(key, CANCELLED, f"dependency failed: {', '.join(failed)}")
                return
        others = [r for r in self.ledger.in_flight(job.name) if r.run_id != run.run_id]
        decision = planning.concurrency_decision(job, len(others))
        if decision == "skip":
            await self.close(key, CANCELLED, "previous run still in flight (concurrency=forbid)")
            return
        if decision == "replace":
            for other in others:
                await self.dispatcher.cancel(other)
        await self.dispatcher.dispatch(run, job)

    def _sendable_ahead(self, job: Any, run: Run) -> bool:
        """May this run go to its agent before its time (to start there at it)? Only when
        nothing that can change before then decides its fate: a planned first attempt, no
        dependencies, and overlap allowed or nothing in flight under forbid."""
        if not run.planned or job.after:
            return False
        if job.concurrency == "allow":
            return True
        return job.concurrency == "forbid" and not any(
            r.run_id != run.run_id for r in self.ledger.in_flight(job.name))

    def _hold_until(self, key: tuple[str, int], at: datetime) -> None:
        """Come back to a run planned early at its nominal time (once per run)."""
        if key in self._held:
            return
        self._held.add(key)

        def due() -> None:
            self._held.discard(key)
            run = self.ledger.get_attempt(*key)
            if run and run.state == SCHEDULED:
                self.spawn(self.advance(run))

        delay = max(0.0, (at - self.clock()).total_seconds())
        asyncio.get_running_loop().call_later(delay, due)

    async def _hold(self, run: Run, job: Any, unsure: list[str]) -> None:
        """Keep the run scheduled until those agents answer (then it is adopted or sent), or
        cancel it once the misfire grace has passed."""
        who = f"agent{'s' if len(unsure) > 1 else ''} {', '.join(unsure)}"
        if self.term.before_term(run):  # this very run may have gone to one of them
            wait, give_up = ("cannot rule out that it already ran", "not sent to another "
                             "agent: it may already have run there")
        else:  # a run of the job may still be running on one of them
            wait = give_up = (f"a run of this job may still be running there "
                              f"(concurrency={job.concurrency})")
            give_up = f"not started: {give_up}"
        if self.clock() - parse_time(run.nominal) > timedelta(seconds=job.misfire.grace):
            await self.close(run.key, CANCELLED,
                             f"{who} stayed unreachable for the misfire grace; {give_up}")
        elif run.reason != (why := f"waiting: {who} unreachable, {wait}"):
            await self.writer.write([Change("update", *run.key, fields={
                "reason": why, "agent": None}, when=(SCHEDULED,))])

    def _dependency_lookup(self, job: Any, nominal: datetime) -> Any:
        """lookup(dep, local_date) for planner.dependency_state: the state of dep's runs on a
        day local to `job`'s time zone; date None means the day of `nominal`."""
        cache: dict[str, str | None] = {}

        def lookup(dep: str, day: date | None) -> str | None:
            if dep in cache:
                return cache[dep]
            start, end = _day_bounds(job, day, nominal)
            runs = self.ledger.runs_between(dep, nominal_iso(start), nominal_iso(end))
            if not runs:
                state = None
            elif any(r.state in OPEN_STATES for r in runs):
                state = "pending"
            else:
                state = SUCCEEDED if runs[-1].state == SUCCEEDED else "failed"
            cache[dep] = state
            return state
        return lookup

    async def recall_sent_ahead(self, job_name: str) -> None:
        """The job was paused: its planned fires already sent ahead (`dispatch_lead`) and not
        yet due are cancelled at their agent, which ends them with nothing started. One due
        within RECALL_MARGIN may be starting already: it is left alone rather than killed as it
        starts."""
        if not self.term.active:
            return
        horizon = self.clock() + timedelta(seconds=RECALL_MARGIN)
        for run in self.ledger.in_flight(job_name):
            # Sent, or taken by the agent (running, started_at still empty) to start later.
            if not run.started_at and run.planned and parse_time(run.nominal) > horizon:
                log.info("job %s paused: recalling %s, sent ahead", job_name, run.run_id)
                await self.dispatcher.cancel(run)

    async def cancel(self, key: tuple[str, int], reason: str,
                     also: Callable[[Run], list[Change]]) -> tuple[Run | None, str | None]:
        """End a run someone cancelled. Not sent yet: cancelled in the ledger, never to be
        dispatched (the advance in progress, if any, is waited for first, so that no order
        leaves after the cancel). At its agent: the agent is asked to end it (TERM, then KILL
        of its processes); it ends `cancelled` when collected. `also(run)` gives changes
        written with the first write that ends or asks to end the run (the audit entry).
        Returns the run as it was, and None or why its agent could not be asked."""
        self._stopped.add(key)
        if len(self._stopped) > 10_000:  # keys are never reused; keep the set small
            self._stopped = {key}
        while key in self._advancing:  # an advance holds the key for a dispatch at most
            await asyncio.sleep(0.02)
        run = self.ledger.get_attempt(*key)
        if run is None or run.state not in OPEN_STATES:
            return run, None
        if run.state == SCHEDULED:
            done = await self.writer.write([*also(run), Change("update", *key, fields={
                "state": CANCELLED, "reason": reason, "finished_at": utc_iso()},
                when=(SCHEDULED,))])
            if done[-1]:
                log.info("run %s attempt %s cancelled: %s", key[0], key[1], reason)
                if self.metrics is not None:
                    self.metrics.count_run(CANCELLED)
                return run, None
            run = self.ledger.get_attempt(*key) or run  # taken on by its agent meanwhile
            why = await self.dispatcher.cancel(run)
        else:
            why = await self.dispatcher.cancel(run)
            if why is None:
                await self.writer.write(also(run))
        return run, why

    async def close(self, key: tuple[str, int], state: str, reason: str) -> None:
        """End a run that is still scheduled (it never reached an agent)."""
        done = await self.writer.write([Change("update", *key, fields={
            "state": state, "reason": reason, "finished_at": utc_iso()}, when=(SCHEDULED,))])
        if done[0]:
            log.info("run %s attempt %s %s: %s", key[0], key[1], state, reason)
            if self.metrics is not None:
                self.metrics.count_run(state)

    async def on_final(self, run: Run) -> None:
        """After a final state: the next attempt, when the job's retries allow one."""
        job = self.jobs().get(run.job)
        if job is None or run.state not in RETRIED_STATES:
            return
        if run.attempt > job.retries.count:
            return
        finished = parse_time(run.finished_at) if run.finished_at else self.clock()
        at = planning.retry_at(job, run.attempt, finished)
        if at is None:
            return
        await self.writer.write([Change("create", run.run_id, run.attempt + 1, run.job, {
            "nominal": run.nominal, "scheduled_at": utc_iso(at), "agent": None,
            "manual": run.manual, "reason": f"retry of attempt {run.attempt}"})])
        log.info("run %s: attempt %d at %s", run.run_id, run.attempt + 1, utc_iso(at))
