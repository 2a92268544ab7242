"""A `Change`: one self-contained state change of the ledger, and how it is applied.

`Ledger.apply` (ledger.py) is the one write path; it runs `apply_change` for each change of a
call inside one transaction, then writes the change log entry of what changed.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from scheduler.changelog import Target
from scheduler.runs import FINAL_STATES, RUN_FIELDS, STATES
from scheduler.times import utc_iso


@dataclass(frozen=True)
class Change:
    """One state change, self-contained: it carries every value it sets, so that the same change
    applied to another copy of the ledger (a standby following the active) gives the same row.
    Nothing in `apply` reads the clock or picks a value.

    op: "create"  insert a run if (run_id, attempt) is absent (a known identity is never re-created)
        "update"  set `fields` on a run, only while its state is in `when` (if given)
        "adopt"   insert or update a run learnt from an agent; a final state is never reopened
        "job"     set paused / last_planned / first_seen / trigger of a job ("" forgets the
                  last two)
        "epoch"   raise the epoch to fields["epoch"] (never lowers it)
        "delete"  remove a run's attempt (history retention)
        "audit"   add an entry to the audit trail (scheduler.audit makes them; its id is in
                  fields, so the same entry is never added twice)

    A "create" or "adopt" without `scheduled_at` gets the time the change was made, here: the
    moment the writer decided it, not the moment (or the node) it is applied.
    """

    op: str
    run_id: str = ""
    attempt: int = 0
    job: str = ""
    fields: Mapping[str, Any] = field(default_factory=dict)
    when: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.op in ("create", "adopt") and "scheduled_at" not in self.fields:
            object.__setattr__(self, "fields", {**self.fields, "scheduled_at": utc_iso()})

    def target(self) -> Target:
        """The row this change touches (what the change log reads back after it)."""
        if self.op == "job":
            return Target("job_state", (self.job,))
        if self.op == "epoch":
            return Target("meta", ("epoch",))
        if self.op == "audit":
            return Target("audit", (self.fields["id"],))
        return Target("runs", (self.run_id, self.attempt))


def apply_change(c: sqlite3.Connection, ch: Change) -> bool:
    """Apply one change inside the caller's transaction; whether it changed anything."""
    f = dict(ch.fields)
    if ch.op == "create":
        row = {"run_id": ch.run_id, "attempt": ch.attempt, "job": ch.job, **f}
        row.setdefault("state", "scheduled")
        _check_fields(row)
        row["manual"] = int(bool(row.get("manual", 0)))
        cols = ", ".join(row)
        marks = ", ".join("?" * len(row))
        cur = c.execute(f"INSERT OR IGNORE INTO runs ({cols}) VALUES ({marks})",
                        tuple(row.values()))
        return cur.rowcount > 0
    if ch.op == "update":
        _check_fields(f)
        sets = ", ".join(f"{k} = ?" for k in f)
        sql = f"UPDATE runs SET {sets} WHERE run_id = ? AND attempt = ?"
        args: list[Any] = [*f.values(), ch.run_id, ch.attempt]
        if ch.when:
            sql += f" AND state IN ({', '.join('?' * len(ch.when))})"
            args += ch.when
        return c.execute(sql, args).rowcount > 0
    if ch.op == "adopt":
        _check_fields(f)
        row = {"run_id": ch.run_id, "attempt": ch.attempt, "job": ch.job, **f}
        cols = ", ".join(row)
        marks = ", ".join("?" * len(row))
        # scheduled_at is when the ledger first knew the run: an adoption never moves it.
        sets = ", ".join(f"{k} = excluded.{k}" for k in f if k != "scheduled_at")
        final = ", ".join(f"'{s}'" for s in FINAL_STATES)
        cur = c.execute(
            f"INSERT INTO runs ({cols}) VALUES ({marks}) ON CONFLICT (run_id, attempt) "
            f"DO UPDATE SET {sets} WHERE runs.state NOT IN ({final})", tuple(row.values()))
        return cur.rowcount > 0
    if ch.op == "job":
        return _apply_job(c, ch.job, f)
    if ch.op == "delete":
        return c.execute("DELETE FROM runs WHERE run_id = ? AND attempt = ?",
                         (ch.run_id, ch.attempt)).rowcount > 0
    if ch.op == "epoch":
        cur = c.execute("UPDATE meta SET value = ? WHERE key = 'epoch' AND value < ?",
                        (int(f["epoch"]), int(f["epoch"])))
        return cur.rowcount > 0
    if ch.op == "audit":
        return _add_audit(c, ch)
    raise ValueError(f"unknown ledger change {ch.op!r}")


def _apply_job(c: sqlite3.Connection, job: str, f: Mapping[str, Any]) -> bool:
    paused = f.get("paused")
    last = f.get("last_planned")
    c.execute("INSERT OR IGNORE INTO job_state (job) VALUES (?)", (job,))
    if paused is not None:
        c.execute("UPDATE job_state SET paused = ? WHERE job = ?", (int(paused), job))
    if last is not None:
        c.execute("UPDATE job_state SET last_planned = ? WHERE job = ?", (last, job))
    if "first_seen" in f:
        c.execute("UPDATE job_state SET first_seen = ? WHERE job = ?",
                  (f["first_seen"] or None, job))
    if "trigger" in f:
        c.execute("UPDATE job_state SET trigger = ? WHERE job = ?", (f["trigger"] or None, job))
    return True


AUDIT_COLUMNS = ("id", "at", "actor", "role", "source", "action", "job", "run_id", "detail")


def _add_audit(c: sqlite3.Connection, ch: Change) -> bool:
    row = {**ch.fields, "job": ch.job or None, "run_id": ch.run_id or None}
    bad = sorted(set(row) - set(AUDIT_COLUMNS))
    if bad:
        raise ValueError(f"unknown audit field(s): {', '.join(bad)}")
    cols, marks = ", ".join(row), ", ".join("?" * len(row))
    cur = c.execute(f"INSERT OR IGNORE INTO audit ({cols}) VALUES ({marks})", tuple(row.values()))
    return cur.rowcount > 0


def _check_fields(f: Mapping[str, Any]) -> None:
    bad = [k for k in f if k not in RUN_FIELDS]
    if bad:
        raise ValueError(f"unknown run field(s): {', '.join(bad)}")
    if "state" in f and f["state"] not in STATES:
        raise ValueError(f"unknown run state {f['state']!r}")
