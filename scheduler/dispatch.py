"""Sending runs to agents: the dispatch order (with the epoch) and its cancel.

Order of durability (docs/semantics.md, "Failover"): a run is in the ledger before it is sent; the
agent it goes to is recorded before the order leaves. Collecting results is scheduler.collect,
taking in what agents ran before this term scheduler.adopt.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from scheduler.agents import AgentPool
from scheduler.jobs import Job
from scheduler.ledger import BatchWriter, Change, utc_iso
from scheduler.protocol import (
    AgentError,
    AgentUnreachable,
    DispatchOrder,
    StaleEpoch,
)
from scheduler.runs import CANCELLED, DISPATCHED, FAILED, RUNNING, SCHEDULED, Run
from scheduler.secretenv import SecretError, read_secret_env
from scheduler.times import parse_time, utc_now

log = logging.getLogger("hasched.dispatch")

StaleHook = Callable[[str, StaleEpoch], None]


def command_of(job: Job) -> list[str]:
    return list(job.command)  # always argv: a job file may not give a plain string


def observe_lateness(metrics: Any, run: Run, record: dict[str, Any]) -> None:
    """Dispatch lateness (agent's started_at - nominal) of a planned run, once its start is
    known from the agent's record: at dispatch, or later for a run sent ahead."""
    if run.manual or not record.get("started_at") or metrics is None:
        return
    late = parse_time(record["started_at"]) - parse_time(run.nominal)
    metrics.observe_lateness(max(0.0, late.total_seconds()))


def _start_at(run: Run) -> str | None:
    """A run sent before its nominal time starts on its agent at that time."""
    return run.nominal if parse_time(run.nominal) > utc_now() else None


class Dispatcher:
    def __init__(self, writer: BatchWriter, pool: AgentPool, epoch: Callable[[], int],
                 on_stale: StaleHook, metrics: Any = None) -> None:
        self.writer = writer
        self.pool = pool
        self.epoch = epoch
        self.on_stale = on_stale
        self.metrics = metrics

    async def _update(self, run: Run, fields: dict[str, Any],
                      when: tuple[str, ...] = (SCHEDULED,)) -> None:
        await self.writer.write([Change("update", run.run_id, run.attempt, fields=fields,
                                        when=when)])

    async def dispatch(self, run: Run, job: Any) -> bool:
        """Send one scheduled run to its agent. False when it stays scheduled (agent down)."""
        agent = run.agent or self.pool.pick(job)
        if agent is None:
            await self._update(run, {"state": CANCELLED, "finished_at": utc_iso(),
                                     "reason": "no agent configured for this job"})
            return False
        if not run.agent:
            # The agent is chosen durably before the order leaves: a re-dispatch after a crash
            # goes to the same agent, whose (run_id, attempt) dedup then makes it harmless.
            await self._update(run, {"agent": agent})
        try:  # read at each dispatch: a rotated secret is in the next run's environment
            secrets = read_secret_env(job.secret_env)
        except SecretError as e:
            await self._update(run, {"state": FAILED, "finished_at": utc_iso(),
                                     "reason": str(e)})
            return False
        order = DispatchOrder(run_id=run.run_id, job=run.job, attempt=run.attempt,
                              epoch=self.epoch(), command=command_of(job),
                              env={**job.env, **secrets}, cwd=job.cwd, user=job.user,
                              timeout=None if job.timeout is None else float(job.timeout),
                              start_at=_start_at(run), memory_max=job.memory_max,
                              cpu_weight=job.cpu_weight)
        try:
            created, record = await self.pool.client(agent).dispatch(order)
        except AgentUnreachable as e:
            self.pool.mark(agent, False, str(e))
            await self._update(run, {"reason": f"agent {agent} unreachable; will retry"})
            return False
        except StaleEpoch as e:
            self.on_stale(agent, e)
            return False
        except AgentError as e:
            log.error("agent %s refused %s attempt %s: %s", agent, run.run_id, run.attempt, e)
            await self._update(run, {"state": FAILED, "finished_at": utc_iso(),
                                     "reason": f"refused by agent {agent}: {e}"})
            return False
        self.pool.mark(agent, True)
        await self._update(run, {
            "state": RUNNING, "agent": agent, "epoch": record.get("epoch", order.epoch),
            "dispatched_at": utc_iso(), "started_at": record.get("started_at"), "reason": None,
        }, when=(SCHEDULED, DISPATCHED))
        if created:
            observe_lateness(self.metrics, run, record)
        log.info("dispatched %s attempt %s to %s%s", run.run_id, run.attempt, agent,
                 "" if created else " (agent already had it)")
        return True

    async def cancel(self, run: Run) -> str | None:
        """Ask the run's agent to end it (a best effort): None when the agent took the order,
        else why not (also logged)."""
        agent = run.agent
        if not agent or agent not in self.pool:
            return f"agent {agent!r} is not configured"
        try:
            await self.pool.client(agent).cancel(run.run_id, run.attempt, self.epoch())
        except StaleEpoch as e:
            self.on_stale(agent, e)
            return f"agent {agent} knows a newer scheduler term"
        except (AgentUnreachable, AgentError) as e:
            log.warning("cannot cancel %s on %s: %s", run.run_id, agent, e)
            return f"agent {agent}: {' '.join(str(e).split())}"
        return None
