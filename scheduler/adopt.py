"""Taking into the ledger what agents ran that this ledger does not know: at the start of a
term (what the predecessor started), and later for an agent that did not answer then.

An adoption is an upsert (`Change("adopt")`): a run this ledger already has is brought up to
date, never reopened once final, with one exception (`correction`): a run this scheduler ended
itself without an agent (cancelled as a missed fire, say: it never saw it start) that an agent
shows it did start. The agent's record wins: the run is recorded as it ran.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timedelta
from typing import Any

from scheduler.agents import AgentPool
from scheduler.ledger import BatchWriter, Change
from scheduler.planner import nominal_of
from scheduler.protocol import AgentError, AgentUnreachable
from scheduler.runs import FINAL_STATES, RUNNING, Run

log = logging.getLogger("hasched.dispatch")

ADOPT_WINDOW = timedelta(days=7)  # the agents' record retention


def result_fields(record: dict[str, Any]) -> dict[str, Any]:
    """The ledger fields of a finished run, from the agent's record of it."""
    dropped = (record.get("output") or {}).get("dropped") or {}
    return {"state": record["state"], "exit_code": record.get("exit_code"),
            "reason": record.get("reason"), "started_at": record.get("started_at"),
            "finished_at": record.get("finished_at"), "epoch": record.get("epoch"),
            "stdout_dropped": dropped.get("stdout"), "stderr_dropped": dropped.get("stderr")}


def adoption(agent: str, record: dict[str, Any], final: bool) -> Change:
    """A ledger upsert for a run an agent knows. Unless `final`, a finished run is recorded
    running so that the collector still fetches its output and acknowledges it."""
    state = record["state"] if final else RUNNING
    # reason None: what a held run waited for is over once an agent shows it.
    fields = {"nominal": nominal_of(record["run_id"]), "agent": agent, "state": state,
              "epoch": record.get("epoch"), "started_at": record.get("started_at"),
              "dispatched_at": record.get("started_at"), "reason": None}
    if final:
        fields.update(result_fields(record))
    return Change("adopt", record["run_id"], int(record["attempt"]), record["job"], fields)


def _final(record: dict[str, Any]) -> bool:
    # Collected and acknowledged by another scheduler: final here too; otherwise ours to collect.
    return bool(record.get("acked")) and record["state"] in FINAL_STATES


def _adoptions(agent: str, records: list[dict[str, Any]]) -> list[Change]:
    return [adoption(agent, r, _final(r)) for r in records]


def correction(agent: str, record: dict[str, Any], run: Run | None) -> Change | None:
    """The change that records `run` as the agent's record shows it ran, when this ledger
    ended it without ever seeing it start (a scheduler-side cancel or failure: a missed fire
    coalesced or skipped at a promotion while its agent did not answer, say) and the agent
    shows it started; else None. Reopened as running unless another scheduler already
    collected it: the collector then fetches its output and result and acknowledges it."""
    if run is None or run.state not in FINAL_STATES or run.started_at \
            or not record.get("started_at"):
        return None
    final = _final(record)
    fields = {k: v for k, v in adoption(agent, record, final).fields.items()
              if k != "scheduled_at"}  # when this ledger first knew the run: kept
    if not final:
        fields.update(finished_at=None, exit_code=None)
    note = (f"recorded {run.state} here ({run.reason or 'no reason given'}) before agent "
            f"{agent} showed that it ran")
    fields["reason"] = f"{fields['reason']}; {note}" if fields.get("reason") else note
    return Change("update", run.run_id, run.attempt, fields=fields, when=(run.state,))


class Adopter:
    def __init__(self, writer: BatchWriter, pool: AgentPool) -> None:
        self.writer = writer
        self.pool = pool

    async def corrections(self, agent: str, records: list[dict[str, Any]],
                          adopted: list[bool]) -> int:
        """Correct the runs ended here that these records (their adoptions not applied:
        `adopted` False, the row is final) show ran; how many were."""
        ledger = self.writer.ledger
        changes = [c for r, done in zip(records, adopted, strict=True) if not done
                   and r.get("started_at") and (c := correction(
                       agent, r, ledger.get_attempt(r["run_id"], int(r["attempt"]))))]
        done = await self.writer.write(changes) if changes else []
        for change, ok in zip(changes, done, strict=True):
            if ok:
                log.warning("run %s attempt %s: %s", change.run_id, change.attempt,
                            change.fields["reason"])
        return sum(done)

    async def _fetch_started(self, agent: str, now: datetime,
                             timeout: float | None = None) -> list[dict[str, Any]] | None:
        try:
            records = await self.pool.client(agent).runs(since=now - ADOPT_WINDOW,
                                                         timeout=timeout)
        except (AgentUnreachable, AgentError) as e:
            self.pool.mark(agent, False, str(e))
            log.warning("cannot adopt runs from %s: %s", agent, e)
            return None
        self.pool.mark(agent, True)
        return records

    async def adopt(self, now: datetime, names: list[str]) -> tuple[dict[str, str], set[str]]:
        """Take into the ledger every run these agents started in the retention window.
        Returns, per job, the latest nominal time seen (the predecessor's last fire), and the
        agents that did not answer or were not asked (what they ran is unknown until
        `adopt_agent`)."""
        latest: dict[str, str] = {}
        changes: list[Change] = []
        # Each agent within the pool's adoption bound: one that does not answer in time is
        # reconciled later (adopt_agent), not waited for by the promotion.
        fetched = await asyncio.gather(*(self._fetch_started(n, now, self.pool.adopt_timeout)
                                         for n in names))
        for agent, records in zip(names, fetched, strict=True):
            changes += _adoptions(agent, records or [])
            for record in records or []:
                nominal = nominal_of(record["run_id"])
                if nominal > latest.get(record["job"], ""):
                    latest[record["job"]] = nominal
        done = await self.writer.write(changes)
        if any(done):
            log.info("adopted %d run record(s) from agents", sum(done))
        at = 0
        for agent, records in zip(names, fetched, strict=True):
            await self.corrections(agent, records or [], done[at:at + len(records or [])])
            at += len(records or [])
        answered = {n for n, records in zip(names, fetched, strict=True) if records is not None}
        return latest, set(self.pool.clients) - answered

    async def adopt_agent(self, agent: str, now: datetime) -> bool:
        """Adopt the runs of one agent that did not answer at promotion; False if it still
        does not."""
        records = await self._fetch_started(agent, now)  # the client's timeout: nobody waits
        if records is None:
            return False
        done = await self.writer.write(_adoptions(agent, records))
        log.info("agent %s answered: adopted %d run record(s) from it", agent, sum(done))
        await self.corrections(agent, records, done)
        return True
