"""Becoming active or standby: the agents' epochs checked and raised to ours, what the
predecessor started adopted, missed fires (and runs left from an earlier term) put through the
misfire policy, pool fires held while a member that may have run them does not answer."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta
from typing import Any

from scheduler import planner as planning
from scheduler.ledger import Change, nominal_iso, parse_time
from scheduler.protocol import StaleEpoch
from scheduler.runs import Run

log = logging.getLogger("hasched.scheduler")

PROBE_EVERY = 5.0


def _now() -> datetime:
    return datetime.now(UTC)


def _is_fire(job: Any, t: datetime) -> bool:
    nxt = job.trigger.next_after(t - timedelta(seconds=1))
    return nxt is not None and nominal_iso(nxt) == nominal_iso(t)


class Roles:
    """The Scheduler's role changes (a mixin of scheduler.daemon.Scheduler, whose ledger,
    writer, dispatcher, jobs, role and loops it uses)."""

    def _set_role(self, role: str) -> None:
        if role != self.role:
            log.warning("role: %s -> %s (epoch %d)", self.role, role, self.ledger.epoch())
        self.role = role
        if self.metrics is not None:
            self.metrics.set_role(role)

    async def _activate(self) -> None:
        assert self.dispatcher is not None
        async with self._role_lock:
            if self.role == "active":
                return
            epoch = self.ledger.epoch()
            seen = await self.dispatcher.probe()
            if seen > epoch:
                log.error("SUPERSEDED: agents have seen epoch %d > ours %d; staying standby",
                          seen, epoch)
                raise RuntimeError(f"agents have seen epoch {seen} > {epoch}: "
                                   "another scheduler is active")
            # Before anything is adopted or sent: an agent that holds our epoch refuses our
            # cut-off predecessor from now on, not only once we first send it an order.
            # Only the agents that answered the probe: a dead node's agent would hold the
            # failover for a timeout at each step. The collect loop tells and adopts it later.
            up = self.dispatcher.answering()
            refused = await self.dispatcher.push_epoch_all(up)
            if refused:
                agent, e = refused[0]
                log.error("SUPERSEDED: agent %s refused our epoch %d (%s); staying standby",
                          agent, epoch, e)
                raise RuntimeError(f"agent {agent} has seen epoch {e.agent_epoch} > {epoch}: "
                                   "another scheduler is active")
            self._set_role("active")
            now = _now()
            latest, self._unadopted = await self.dispatcher.adopt(now, up)
            self._activated_at = now
            await self._catch_up(latest, now)
            self._tasks = [asyncio.create_task(self._plan_loop()),
                           asyncio.create_task(self._collect_loop())]

    async def _deactivate(self) -> None:
        async with self._role_lock:
            tasks, self._tasks = self._tasks + list(self._spawned), []
            for t in tasks:
                t.cancel()
            for t in tasks:
                try:
                    await t
                except (asyncio.CancelledError, Exception):
                    pass
            self._set_role("standby")

    def _superseded(self, agent: str, e: StaleEpoch) -> None:
        if self.role != "active":
            return
        log.error("SUPERSEDED: agent %s refused our epoch %d (%s); demoting to standby",
                  agent, self.ledger.epoch(), e)
        self.role = "demoting"  # stops new dispatches at once; the task below finishes the job
        asyncio.get_running_loop().create_task(self._deactivate())

    async def promote(self, epoch: int) -> dict[str, Any]:
        new = self.ledger.raise_epoch(epoch)  # durable before we act under it
        if self.metrics is not None:
            self.metrics.set_epoch(new)
        await self._activate()
        return {"role": self._public_role(), "epoch": new}

    async def demote(self) -> dict[str, Any]:
        await self._deactivate()
        return {"role": self._public_role(), "epoch": self.ledger.epoch()}

    async def _catch_up(self, latest: dict[str, str], now: datetime) -> None:
        """Missed fires since the latest of: each job's last planned time, the predecessor's
        last fire, when this daemon first saw the job; within the misfire grace. Then the plan
        from `now` on."""
        states = self.ledger.job_states()
        fires: list[tuple[Any, datetime]] = []
        for name, job in self.jobs.items():
            state = states.get(name, {})
            marks = [parse_time(t) for t in (state.get("last_planned"), state.get("first_seen"),
                                             latest.get(name)) if t]
            if latest.get(name) and not _is_fire(job, parse_time(latest[name])):
                marks.pop()  # a manual run's time is not a point of the schedule
            marks = [m for m in marks if m <= now]
            last = max(marks) if marks else now - timedelta(seconds=job.misfire.grace)
            fires += [(job, t) for t in planning.missed_fires(job, last, now)]
        await self._drop_stale(fires, now)
        await self._fire(fires)
        self.plan = planning.FirePlan()
        self.plan.load(self.jobs, now)

    async def _drop_stale(self, fires: list[tuple[Any, datetime]], now: datetime) -> None:
        """Runs left `scheduled` by an earlier term (this node was demoted, or stopped) are
        missed fires too: they go through the misfire policy with the fires missed now."""
        stale = [r for r in self.ledger.open_runs() if r.state == "scheduled"]
        paused = {n for n, s in self.ledger.job_states().items() if s["paused"]}
        newest: dict[str, datetime] = {}
        planned = [(job.name, t) for job, t in fires if job.name not in paused]
        planned += [(r.job, parse_time(r.nominal)) for r in stale
                    if not r.manual and r.attempt == 1]
        for name, t in planned:
            newest[name] = max(newest.get(name, t), t)
        drops = []
        for r in stale:
            job = self.jobs.get(r.job)
            if job is None:
                continue  # _advance cancels it
            is_planned = not r.manual and r.attempt == 1
            due = parse_time(r.nominal if r.attempt == 1 else r.scheduled_at)
            why = planning.stale_run_verdict(job, due, now, is_planned, newest.get(job.name))
            if why:
                drops.append(self._close((r.run_id, r.attempt), "cancelled", why))
        await asyncio.gather(*drops)

    def _unsure_members(self, job: Any, row: Run) -> list[str]:
        """The pool members that did not answer when this term began, for a planned fire from
        before then: the predecessor may have sent it to one of them, and a run sent to another
        member would run twice."""
        if (job.agent or row.manual or row.attempt != 1 or not self._unadopted
                or self._activated_at is None
                or parse_time(row.nominal) >= self._activated_at):
            return []
        assert self.dispatcher is not None
        return sorted(a for a in self._unadopted if job.pool in self.dispatcher.labels.get(a, ()))

    async def _hold(self, key: tuple[str, int], row: Run, job: Any,
                    unsure: list[str]) -> None:
        """Keep the run scheduled until those agents answer (then it is adopted or sent), or
        cancel it once the misfire grace has passed."""
        who = f"agent{'s' if len(unsure) > 1 else ''} {', '.join(unsure)}"
        if _now() - parse_time(row.nominal) > timedelta(seconds=job.misfire.grace):
            await self._close(key, "cancelled", f"{who} stayed unreachable for the misfire grace; "
                              "not sent to another agent: it may already have run there")
        elif row.reason != (why := f"waiting: {who} unreachable, cannot rule out that it "
                                      "already ran"):
            await self.writer.write([Change("update", *key, fields={"reason": why, "agent": None},
                                            when=("scheduled",))])

    async def _probe_loop(self) -> None:
        assert self.dispatcher is not None
        while True:
            if self.role != "active":
                await self.dispatcher.probe()
            await asyncio.sleep(PROBE_EVERY)
