"""Taking into the ledger what agents ran that this ledger does not know: at the start of a
term (what the predecessor started), and later for an agent that did not answer then.

An adoption is an upsert (`Change("adopt")`): a run this ledger already has is brought up to
date, never reopened once final.
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
from scheduler.runs import FINAL_STATES, RUNNING

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
    fields = {"nominal": nominal_of(record["run_id"]), "agent": agent, "state": state,
              "epoch": record.get("epoch"), "started_at": record.get("started_at"),
              "dispatched_at": record.get("started_at")}
    if final:
        fields.update(result_fields(record))
    return Change("adopt", record["run_id"], int(record["attempt"]), record["job"], fields)


def _adoptions(agent: str, records: list[dict[str, Any]]) -> list[Change]:
    # Collected and acknowledged by another scheduler: final here too; otherwise ours to collect.
    return [adoption(agent, r, bool(r.get("acked")) and r["state"] in FINAL_STATES)
            for r in records]


class Adopter:
    def __init__(self, writer: BatchWriter, pool: AgentPool) -> None:
        self.writer = writer
        self.pool = pool

    async def _fetch_started(self, agent: str, now: datetime) -> list[dict[str, Any]] | None:
        try:
            records = await self.pool.client(agent).runs(since=now - ADOPT_WINDOW)
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
        fetched = await asyncio.gather(*(self._fetch_started(n, now) for n in names))
        for agent, records in zip(names, fetched, strict=True):
            changes += _adoptions(agent, records or [])
            for record in records or []:
                nominal = nominal_of(record["run_id"])
                if nominal > latest.get(record["job"], ""):
                    latest[record["job"]] = nominal
        done = await self.writer.write(changes)
        if any(done):
            log.info("adopted %d run record(s) from agents", sum(done))
        answered = {n for n, records in zip(names, fetched, strict=True) if records is not None}
        return latest, set(self.pool.clients) - answered

    async def adopt_agent(self, agent: str, now: datetime) -> bool:
        """Adopt the runs of one agent that did not answer at promotion; False if it still
        does not."""
        records = await self._fetch_started(agent, now)
        if records is None:
            return False
        done = await self.writer.write(_adoptions(agent, records))
        log.info("agent %s answered: adopted %d run record(s) from it", agent, sum(done))
        return True
