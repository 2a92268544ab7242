"""Rejoin: a returning ex-active's diverged tail, handed to the active or reported.

The ex-active's entries after the fork were never received by the active (it was cut off, or
killed before its follower had them). Before it resyncs from a snapshot (which replaces them),
it sends the last image of each row its tail touched (`POST /v1/replication/handover`). The
active decides per row, and says why:
- a run it does not know is created as the ex-active had it (a manual run accepted, a retry
  pending, a run's history); one it knows keeps the active's own record;
- a job's pause or resume is applied unless the active changed that job since the fork.
Each decision is logged on both sides, with the reason.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from scheduler.changelog import TABLE_KEYS, Entry
from scheduler.ledger import BatchWriter, Change, Ledger

log = logging.getLogger("hasched.replication")

Post = Callable[[str, dict[str, Any]], Awaitable[dict[str, Any]]]


@dataclass(frozen=True)
class Outcome:
    """The active's decision on one row of a handed-over tail."""

    table: str
    key: tuple[Any, ...]
    applied: bool
    reason: str

    def to_json(self) -> dict[str, Any]:
        return {"t": self.table, "key": list(self.key), "applied": self.applied,
                "reason": self.reason}


def tail_rows(tail: list[Entry]) -> dict[str, list[dict[str, Any]]]:
    """The last image of each run and job row a tail touched (deletions are not handed over:
    history pruning runs again on the active)."""
    last: dict[tuple[str, tuple[Any, ...]], dict[str, Any] | None] = {}
    for entry in tail:
        for image in entry.images:
            if image.table in ("runs", "job_state"):
                last[(image.table, image.key)] = image.row
    out: dict[str, list[dict[str, Any]]] = {"runs": [], "jobs": []}
    for (table, _), row in last.items():
        if row is not None:
            out["runs" if table == "runs" else "jobs"].append(row)
    return out


class Handover:
    def __init__(self, ledger: Ledger, writer: BatchWriter) -> None:
        self.ledger, self.writer = ledger, writer

    # -- the active's side -----------------------------------------------------------------
    def _touched_since(self, fork: int) -> set[str] | None:
        """Jobs whose job_state the active changed after `fork` (None: its log no longer
        reaches back there, so it cannot tell)."""
        if fork < self.ledger.trim_point():
            return None
        jobs = set()
        for entry in self.ledger.entries(fork, 1 << 30):
            jobs.update(str(i.key[0]) for i in entry.images if i.table == "job_state")
        return jobs

    async def receive(self, body: dict[str, Any]) -> dict[str, Any]:
        fork = int(body.get("fork") or 0)
        outcomes: list[Outcome] = []
        changes: list[Change] = []
        for row in body.get("runs") or []:
            key = (str(row["run_id"]), int(row["attempt"]))
            mine = self.ledger.get_attempt(*key)
            if mine is not None:
                outcomes.append(Outcome("runs", key, False,
                                        f"the active has its own record of it ({mine.state})"))
                continue
            fields = {k: v for k, v in row.items() if k not in ("run_id", "attempt", "job")}
            changes.append(Change("create", key[0], key[1], str(row["job"]), fields))
            outcomes.append(Outcome("runs", key, True,
                                    f"created on the active ({row.get('state')})"))
        touched = self._touched_since(fork)
        for row in body.get("jobs") or []:
            job = str(row["job"])
            paused = bool(row.get("paused"))
            what = "paused" if paused else "resumed"
            if touched is None:
                outcomes.append(Outcome("job_state", (job,), False, f"{what} there, but the "
                                        "active's log no longer reaches back to the fork"))
            elif job in touched:
                outcomes.append(Outcome("job_state", (job,), False,
                                        f"{what} there, but changed on the active since"))
            elif bool(self.ledger.job_state(job).get("paused")) == paused:
                outcomes.append(Outcome("job_state", (job,), True, f"already {what}"))
            else:
                changes.append(Change("job", job=job, fields={"paused": paused}))
                outcomes.append(Outcome("job_state", (job,), True, f"{what} on the active"))
        if changes:
            await self.writer.write(changes)
        for o in outcomes:
            log.warning("handover from a returning node: %s %s: %s", o.table,
                        "/".join(map(str, o.key)), o.reason)
        return {"outcomes": [o.to_json() for o in outcomes]}

    # -- the returning node's side -----------------------------------------------------------
    @staticmethod
    async def give(source: str, fork: int, tail: list[Entry], post: Post) -> list[Outcome]:
        """Hand the tail to the active; each row's outcome, logged."""
        body = {"fork": fork, **tail_rows(tail)}
        answer = await post(f"{source}/v1/replication/handover", body)
        outcomes = [Outcome(o["t"], tuple(o["key"]), bool(o["applied"]), str(o["reason"]))
                    for o in answer.get("outcomes", []) if o.get("t") in TABLE_KEYS]
        for o in outcomes:
            log.warning("replication: our diverged %s %s: %s%s", o.table,
                        "/".join(map(str, o.key)), "" if o.applied else "NOT handed over: ",
                        o.reason)
        return outcomes
