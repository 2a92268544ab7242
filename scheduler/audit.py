"""The audit trail: who (a token's name, never the token) did what to which job or run, when and
from where. Each entry is written by `Ledger.apply` (op "audit", table `audit`) in the same
transaction as what it records, so a pause and its entry are durable together, and replicate
with the rest of the ledger."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from scheduler.changes import AUDIT_COLUMNS, Change
from scheduler.times import utc_iso

# What an entry says was done (the API's state-changing calls).
ACTIONS = ("run", "pause", "resume", "cancel")


@dataclass(frozen=True)
class Actor:
    """Who asks for a change: the token's name and role, and where the request came from."""

    name: str
    role: str
    source: str = ""


# In-process callers (tests, tools) that name no one.
NOBODY = Actor("-", "admin", "in-process")


def entry(by: Actor, action: str, job: str, run_id: str | None = None,
          detail: str | None = None) -> Change:
    """The ledger change recording one action. Self-contained (its id and time are decided
    here, by the writer), so that applied on another copy of the ledger it gives the same row."""
    if action not in ACTIONS:
        raise ValueError(f"unknown audit action {action!r}")
    return Change("audit", run_id=run_id or "", job=job, fields={
        "id": uuid.uuid4().hex, "at": utc_iso(), "actor": by.name, "role": by.role,
        "source": by.source or None, "action": action, "detail": detail})


def view(row: dict[str, Any]) -> dict[str, Any]:
    """An entry as the API shows it."""
    return {k: row.get(k) for k in AUDIT_COLUMNS}
