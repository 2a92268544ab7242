"""The durable run ledger: every run's life, paused jobs, the epoch, in one SQLite file.

`Ledger.apply` is the ONE write path: every state change is a `Change`, applied in one
transaction per call, then handed to the change listeners (a replicated standby follows that
stream). Reads use a second connection so that the API can query while a write is in flight.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from scheduler.runs import FINAL_STATES, OPEN_STATES, RUN_FIELDS, STATES, Run
from scheduler.statedir import FILE_MODE, make_private, private_dir
from scheduler.times import nominal_iso, parse_time, utc_iso  # also for the ledger's users

__all__ = ["FINAL_STATES", "OPEN_STATES", "STATES", "BatchWriter", "Change", "Ledger",
           "LedgerError", "Run", "nominal_iso", "parse_time", "utc_iso"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT NOT NULL, attempt INTEGER NOT NULL, job TEXT NOT NULL, nominal TEXT NOT NULL,
    state TEXT NOT NULL, agent TEXT, epoch INTEGER, exit_code INTEGER, reason TEXT,
    scheduled_at TEXT, dispatched_at TEXT, started_at TEXT, finished_at TEXT,
    output_path TEXT, manual INTEGER NOT NULL DEFAULT 0,
    stdout_dropped INTEGER, stderr_dropped INTEGER,
    PRIMARY KEY (run_id, attempt));
CREATE INDEX IF NOT EXISTS runs_job_nominal ON runs (job, nominal);
CREATE INDEX IF NOT EXISTS runs_nominal ON runs (nominal);
CREATE INDEX IF NOT EXISTS runs_open ON runs (state) WHERE state IN
    ('scheduled', 'dispatched', 'running');
CREATE TABLE IF NOT EXISTS job_state (
    job TEXT PRIMARY KEY, paused INTEGER NOT NULL DEFAULT 0, last_planned TEXT,
    first_seen TEXT, trigger TEXT);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value);
CREATE TABLE IF NOT EXISTS audit (
    id TEXT PRIMARY KEY, at TEXT NOT NULL, actor TEXT NOT NULL, role TEXT, source TEXT,
    action TEXT NOT NULL, job TEXT, run_id TEXT, detail TEXT);
CREATE INDEX IF NOT EXISTS audit_at ON audit (at);
CREATE INDEX IF NOT EXISTS audit_job_at ON audit (job, at);
INSERT OR IGNORE INTO meta (key, value) VALUES ('epoch', 0);
"""
AUDIT_COLUMNS = ("id", "at", "actor", "role", "source", "action", "job", "run_id", "detail")


class LedgerError(RuntimeError):
    """The ledger file cannot be opened or written."""


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


Listener = Callable[[list[Change]], None]


class Ledger:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._listeners: list[Listener] = []
        self._wlock = threading.Lock()
        self._rlock = threading.Lock()
        # Private from its creation on: SQLite gives the -wal and -shm files the mode of the
        # database file, and runs' commands and reasons are nobody else's business.
        private_dir(self.path.parent)
        try:
            os.close(os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, FILE_MODE))
        except OSError as e:
            raise LedgerError(f"{self.path}: cannot open the ledger: {e.strerror or e}") from e
        make_private(*(f"{self.path}{suffix}" for suffix in ("", "-wal", "-shm")))
        try:
            self._w = self._connect()
            self._w.executescript(_SCHEMA)
            self._upgrade()
            self._r = self._connect()
        except sqlite3.Error as e:
            raise LedgerError(f"{self.path}: cannot open the ledger: {e}") from e

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False,
                               timeout=30)
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA journal_mode=WAL")
        # FULL, not NORMAL: in WAL mode NORMAL syncs only at checkpoints, so a power loss can
        # drop the last commits. A lost "scheduled" row would make a restarted scheduler re-plan a
        # fire it already dispatched (agents would dedup it, but a lost final state would be
        # collected again from an agent that already dropped it after our ack). With FULL every
        # commit is on disk before we dispatch or ack; callers batch many runs per transaction so
        # the fsync cost is paid once per batch, not once per run.
        conn.execute("PRAGMA synchronous=FULL")
        return conn

    def _upgrade(self) -> None:
        """Columns added since the first release, for ledgers written by an older version."""
        cols = {r[1] for r in self._w.execute("PRAGMA table_info(job_state)")}
        for col in ("first_seen", "trigger"):
            if col not in cols:
                self._w.execute(f"ALTER TABLE job_state ADD COLUMN {col} TEXT")
        cols = {r[1] for r in self._w.execute("PRAGMA table_info(runs)")}
        for col in ("stdout_dropped", "stderr_dropped"):  # output beyond the agent's limit
            if col not in cols:
                self._w.execute(f"ALTER TABLE runs ADD COLUMN {col} INTEGER")

    def close(self) -> None:
        with self._wlock, self._rlock:
            self._w.close()
            self._r.close()

    def on_change(self, listener: Listener) -> None:
        self._listeners.append(listener)

    # -- the one write path ----------------------------------------------------
    def apply(self, changes: Iterable[Change]) -> list[bool]:
        """Apply changes in one transaction; returns, per change, whether it changed anything."""
        changes = list(changes)
        if not changes:
            return []
        with self._wlock:
            c = self._w
            try:
                c.execute("BEGIN IMMEDIATE")
                done = [self._apply_one(c, ch) for ch in changes]
                c.execute("COMMIT")
            except BaseException as e:
                # Whatever went wrong (an int SQLite cannot hold raised OverflowError, which
                # left the connection inside its transaction and every later write failing),
                # nothing of the batch stays and the next write starts clean.
                if c.in_transaction:
                    c.execute("ROLLBACK")
                if isinstance(e, sqlite3.Error | OverflowError):
                    raise LedgerError(f"{self.path}: write failed: {e}") from e
                raise
        effective = [ch for ch, ok in zip(changes, done, strict=True) if ok]
        if effective:
            for listener in self._listeners:
                listener(effective)
        return done

    @staticmethod
    def _apply_one(c: sqlite3.Connection, ch: Change) -> bool:
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
            paused = f.get("paused")
            last = f.get("last_planned")
            c.execute("INSERT OR IGNORE INTO job_state (job) VALUES (?)", (ch.job,))
            if paused is not None:
                c.execute("UPDATE job_state SET paused = ? WHERE job = ?", (int(paused), ch.job))
            if last is not None:
                c.execute("UPDATE job_state SET last_planned = ? WHERE job = ?", (last, ch.job))
            if "first_seen" in f:
                c.execute("UPDATE job_state SET first_seen = ? WHERE job = ?",
                          (f["first_seen"] or None, ch.job))
            if "trigger" in f:
                c.execute("UPDATE job_state SET trigger = ? WHERE job = ?",
                          (f["trigger"] or None, ch.job))
            return True
        if ch.op == "epoch":
            cur = c.execute("UPDATE meta SET value = ? WHERE key = 'epoch' AND value < ?",
                            (int(f["epoch"]), int(f["epoch"])))
            return cur.rowcount > 0
        if ch.op == "audit":
            return _add_audit(c, ch)
        raise ValueError(f"unknown ledger change {ch.op!r}")

    # -- convenience writers (all go through apply) ---------------------------
    def raise_epoch(self, epoch: int) -> int:
        self.apply([Change("epoch", fields={"epoch": epoch})])
        return self.epoch()

    # -- reads -----------------------------------------------------------------
    def _query(self, sql: str, args: Iterable[Any] = ()) -> list[dict[str, Any]]:
        with self._rlock:
            try:
                return [dict(r) for r in self._r.execute(sql, tuple(args)).fetchall()]
            except sqlite3.Error as e:
                raise LedgerError(f"{self.path}: read failed: {e}") from e

    def epoch(self) -> int:
        return int(self._query("SELECT value FROM meta WHERE key = 'epoch'")[0]["value"])

    def check(self) -> str:
        """'ok' or 'error: ...' after a real read of the file."""
        try:
            res = self._query("PRAGMA quick_check")
            first = next(iter(res[0].values())) if res else "no answer"
            return "ok" if first == "ok" else f"error: {first}"
        except LedgerError as e:
            return f"error: {e}"

    def _runs(self, sql: str, args: Iterable[Any] = ()) -> list[Run]:
        return [Run.from_row(r) for r in self._query(sql, args)]

    def get_attempt(self, run_id: str, attempt: int) -> Run | None:
        rows = self._runs("SELECT * FROM runs WHERE run_id = ? AND attempt = ?",
                          (run_id, attempt))
        return rows[0] if rows else None

    def get_run(self, run_id: str) -> Run | None:
        """The latest attempt of a run."""
        rows = self._runs("SELECT * FROM runs WHERE run_id = ? ORDER BY attempt DESC LIMIT 1",
                          (run_id,))
        return rows[0] if rows else None

    def list_runs(self, job: str | None = None, state: str | None = None,
                  since: str | None = None, until: str | None = None,
                  limit: int = 100) -> list[Run]:
        """Runs (every attempt), newest nominal time first; since/until bound the nominal time."""
        where, args = [], []
        if job:
            where.append("job = ?")
            args.append(job)
        if state:
            where.append("state = ?")
            args.append(state)
        if since:
            where.append("nominal >= ?")
            args.append(nominal_iso(parse_time(since)))
        if until:
            where.append("nominal <= ?")
            args.append(nominal_iso(parse_time(until)))
        sql = "SELECT * FROM runs"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY nominal DESC, attempt DESC LIMIT ?"
        return self._runs(sql, [*args, max(0, int(limit))])

    def open_runs(self, job: str | None = None) -> list[Run]:
        """Runs not finished yet (scheduled, dispatched, running), oldest first."""
        sql = "SELECT * FROM runs WHERE state IN ('scheduled', 'dispatched', 'running')"
        args: list[Any] = []
        if job:
            sql += " AND job = ?"
            args.append(job)
        return self._runs(sql + " ORDER BY nominal, attempt", args)

    def in_flight(self, job: str) -> list[Run]:
        """Runs of a job handed to an agent and not finished (what concurrency looks at)."""
        return self._runs("SELECT * FROM runs WHERE job = ? AND state IN "
                           "('dispatched', 'running') ORDER BY nominal", (job,))

    def runs_between(self, job: str, start: str, end: str) -> list[Run]:
        """Latest attempts of a job's runs with start <= nominal < end (dependency lookups)."""
        return self._runs(
            "SELECT r.* FROM runs r WHERE r.job = ? AND r.nominal >= ? AND r.nominal < ? AND "
            "r.attempt = (SELECT MAX(attempt) FROM runs x WHERE x.run_id = r.run_id) "
            "ORDER BY r.nominal", (job, start, end))

    def job_states(self) -> dict[str, dict[str, Any]]:
        return {r["job"]: r for r in self._query("SELECT * FROM job_state")}

    def job_state(self, job: str) -> dict[str, Any]:
        """One job's row of job_state ({} when it has none)."""
        rows = self._query("SELECT * FROM job_state WHERE job = ?", (job,))
        return rows[0] if rows else {}

    def paused_jobs(self) -> set[str]:
        return {r["job"] for r in self._query("SELECT job FROM job_state WHERE paused != 0")}

    def audit(self, job: str | None = None, since: str | None = None,
              limit: int = 100) -> list[dict[str, Any]]:
        """Audit entries, newest first; `since` bounds their time (ISO-8601)."""
        where, args = [], []
        if job:
            where.append("job = ?")
            args.append(job)
        if since:
            where.append("at >= ?")
            args.append(utc_iso(parse_time(since)))
        sql = "SELECT * FROM audit" + (" WHERE " + " AND ".join(where) if where else "")
        return self._query(sql + " ORDER BY at DESC, id DESC LIMIT ?", [*args, max(0, limit)])

    def counts(self) -> dict[str, int]:
        rows = self._query("SELECT state, COUNT(*) AS n FROM runs GROUP BY state")
        return {r["state"]: r["n"] for r in rows}


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


class BatchWriter:
    """Coalesces the writes that coroutines ask for within one event-loop turn into one
    transaction: with synchronous=FULL the fsync is paid per batch, not per run."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger
        self._pending: list[tuple[list[Change], asyncio.Future[list[bool]]]] = []

    async def write(self, changes: Iterable[Change]) -> list[bool]:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[list[bool]] = loop.create_future()
        if not self._pending:
            loop.call_soon(self._flush)
        self._pending.append((list(changes), fut))
        return await fut

    def _flush(self) -> None:
        batch, self._pending = self._pending, []
        try:
            done = self.ledger.apply([ch for changes, _ in batch for ch in changes])
        except (LedgerError, ValueError) as e:
            for _, fut in batch:
                if not fut.done():
                    fut.set_exception(e)
            return
        i = 0
        for changes, fut in batch:
            if not fut.done():
                fut.set_result(done[i:i + len(changes)])
            i += len(changes)
