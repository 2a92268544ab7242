"""Moving a scheduled run on: wait (dependencies, a retry's time, a pool member that may have
run it), cancel, or dispatch; and what follows a final state (retries)."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from scheduler import planner as planning
from scheduler.ledger import OPEN_STATES, Change, nominal_iso, parse_time, utc_iso
from scheduler.runs import Run
from scheduler.triggers import zone

log = logging.getLogger("hasched.scheduler")


def _now() -> datetime:
    return datetime.now(UTC)


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


class RunProgress:
    """How the Scheduler moves runs on (a mixin of scheduler.daemon.Scheduler, whose ledger,
    writer, dispatcher and jobs it uses)."""

    async def _advance(self, row: Run) -> None:
        """Move a scheduled run on: wait, cancel, or dispatch (policies decided here)."""
        key = (row.run_id, row.attempt)
        if key in self._advancing or self.role != "active":
            return
        self._advancing.add(key)
        try:
            await self._advance_one(row)
        finally:
            self._advancing.discard(key)

    async def _advance_one(self, row: Run) -> None:
        assert self.dispatcher is not None
        key = (row.run_id, row.attempt)
        job = self.jobs.get(row.job)
        if job is None:
            await self._close(key, "cancelled", "job is no longer defined")
            return
        if row.scheduled_at and parse_time(row.scheduled_at) > _now():
            return  # a retry waiting for its time
        nominal = parse_time(row.nominal)
        if nominal > _now() and not self._sendable_ahead(job, row):
            self._hold_until(key, nominal)
            return
        unsure = self._unsure_members(job, row)
        if unsure:
            await self._hold(key, row, job, unsure)
            return
        if job.after and not row.manual:
            lookup = self._dependency_lookup(job, nominal)
            dep = planning.dependency_state(job, nominal, lookup)
            if dep == "wait":
                waiting = [d for d in job.after if lookup(d, None) != "succeeded"]
                if _now() >= _day_end(job, nominal):
                    await self._close(key, "cancelled", "dependencies did not succeed by the end "
                                      f"of the day: {', '.join(waiting)}")
                elif row.reason != (why := f"waiting for {', '.join(waiting)}"):
                    await self.writer.write([Change("update", *key, fields={"reason": why},
                                                    when=("scheduled",))])
                return
            if dep == "failed":
                failed = [d for d in job.after if lookup(d, None) == "failed"]
                await self._close(key, "cancelled", f"dependency failed: {', '.join(failed)}")
                return
        others = [r for r in self.ledger.in_flight(job.name) if r.run_id != row.run_id]
        decision = planning.concurrency_decision(job, len(others))
        if decision == "skip":
            await self._close(key, "cancelled", "previous run still in flight (concurrency=forbid)")
            return
        if decision == "replace":
            for other in others:
                await self.dispatcher.cancel(other)
        await self.dispatcher.dispatch(row, job)

    def _sendable_ahead(self, job: Any, row: Run) -> bool:
        """May this run go to its agent before its time (to start there at it)? Only when
        nothing that can change before then decides its fate: a planned first attempt, no
        dependencies, and overlap allowed or nothing in flight under forbid."""
        if row.manual or row.attempt != 1 or job.after:
            return False
        if job.concurrency == "allow":
            return True
        return job.concurrency == "forbid" and not any(
            r.run_id != row.run_id for r in self.ledger.in_flight(job.name))

    def _hold_until(self, key: tuple[str, int], at: datetime) -> None:
        """Come back to a run planned early at its nominal time (once per run)."""
        if key in self._held:
            return
        self._held.add(key)

        def due() -> None:
            self._held.discard(key)
            row = self.ledger.get_attempt(*key)
            if row and row.state == "scheduled":
                self._spawn(self._advance(row))

        delay = max(0.0, (at - _now()).total_seconds())
        asyncio.get_running_loop().call_later(delay, due)

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
                state = "succeeded" if runs[-1].state == "succeeded" else "failed"
            cache[dep] = state
            return state
        return lookup

    async def _close(self, key: tuple[str, int], state: str, reason: str) -> None:
        done = await self.writer.write([Change("update", *key, fields={
            "state": state, "reason": reason, "finished_at": utc_iso()}, when=("scheduled",))])
        if done[0]:
            log.info("run %s attempt %s %s: %s", key[0], key[1], state, reason)
            if self.metrics is not None:
                self.metrics.count_run(state)

    async def _on_final(self, row: Run) -> None:
        job = self.jobs.get(row.job)
        if job is None or row.state not in ("failed", "timed-out", "lost"):
            return
        if row.attempt > job.retries.count:
            return
        finished = parse_time(row.finished_at) if row.finished_at else _now()
        at = planning.retry_at(job, row.attempt, finished)
        if at is None:
            return
        await self.writer.write([Change("create", row.run_id, row.attempt + 1, row.job, {
            "nominal": row.nominal, "scheduled_at": utc_iso(at), "agent": None,
            "manual": row.manual, "reason": f"retry of attempt {row.attempt}"})])
        log.info("run %s: attempt %d at %s", row.run_id, row.attempt + 1, utc_iso(at))
