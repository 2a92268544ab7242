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
from collections.abc import Callable, Iterable
from datetime import timedelta
from pathlib import Path
from typing import Any, Protocol

from scheduler import changelog
from scheduler.changelog import Entry, Position, RawEntry, Terms
from scheduler.changes import Change, apply_change
from scheduler.runs import FINAL_STATES, OPEN_STATES, STATES, Run
from scheduler.statedir import FILE_MODE, make_private, private_dir
from scheduler.times import nominal_iso, parse_time, utc_iso, utc_now  # also for the ledger's users

__all__ = ["FINAL_STATES", "OPEN_STATES", "STATES", "BatchWriter", "Change", "Entry", "Ledger",
           "LedgerError", "Position", "Run", "nominal_iso", "parse_time", "utc_iso"]

# The change log keeps the last hour AND at most this many entries (a follower further behind
# resyncs from a snapshot); trimmed every TRIM_EVERY commits, inside one of them.
LOG_KEEP_SECONDS = 3600.0
LOG_KEEP_ENTRIES = 1_000_000
TRIM_EVERY = 1000

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


class LedgerError(RuntimeError):
    """The ledger file cannot be opened or written."""


Listener = Callable[[list[Change]], None]
CommitListener = Callable[[int], None]  # the seq of the entry just committed


class Ledger:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._listeners: list[Listener] = []
        self._commit_listeners: list[CommitListener] = []
        self._commits = 0
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
            changelog.init(self._w)
            self._head = changelog.head(self._w)
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

    def on_commit(self, listener: CommitListener) -> None:
        """`listener(seq)` after each commit that wrote a log entry (in the writer's thread)."""
        self._commit_listeners.append(listener)

    @property
    def head(self) -> int:
        """The seq of the last log entry written (0: none yet)."""
        return self._head

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
                done = [apply_change(c, ch) for ch in changes]
                targets = [ch.target() for ch, ok in zip(changes, done, strict=True) if ok]
                seq = changelog.record(c, targets, utc_iso()) if targets else None
                if seq is not None:
                    self._maybe_trim(c)
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
        if seq is not None:
            self._committed(seq)
        return done

    def _committed(self, seq: int) -> None:
        self._head = seq
        for commit_listener in self._commit_listeners:
            commit_listener(seq)

    def _maybe_trim(self, c: sqlite3.Connection) -> None:
        self._commits += 1
        if self._commits % TRIM_EVERY == 0:
            cutoff = utc_iso(utc_now() - timedelta(seconds=LOG_KEEP_SECONDS))
            changelog.trim(c, cutoff, LOG_KEEP_ENTRIES)

    # -- the change log: a follower's side and the source's reads --------------------------
    def append(self, entries: list[Entry]) -> int:
        """Apply a source's entries in one transaction; the new head (see append_raw)."""
        return self.append_raw([RawEntry.of(e) for e in entries])[0]

    def append_raw(self, entries: list[RawEntry], deleted: changelog.Deleted | None = None,
                   ) -> tuple[int, list[list[dict[str, Any]]]]:
        """Apply a source's entries in one transaction (row images, the entries with their
        seq); the new head and each entry's images. No change listener hears of them: they are
        not this node's decisions."""
        if not entries:
            return self._head, []
        with self._wlock:
            c = self._w
            try:
                c.execute("BEGIN IMMEDIATE")
                last, decoded = changelog.append(c, entries, deleted)
                self._maybe_trim(c)
                c.execute("COMMIT")
            except BaseException as e:
                if c.in_transaction:
                    c.execute("ROLLBACK")
                if isinstance(e, sqlite3.Error):
                    raise LedgerError(f"{self.path}: write failed: {e}") from e
                raise
        self._committed(last)
        return last, decoded

    def entries(self, after: int, limit: int) -> list[Entry]:
        return [e.decoded() for e in self.raw_entries(after, limit)]

    def raw_entries(self, after: int, limit: int) -> list[RawEntry]:
        with self._rlock:
            return changelog.read(self._r, after, limit)

    def position(self) -> Position:
        with self._rlock:
            return changelog.position(self._r)

    def terms(self) -> Terms:
        with self._rlock:
            return changelog.terms(self._r)

    def trim_point(self) -> int:
        with self._rlock:
            return changelog.trim_point(self._r)

    def trim(self, before_at: str, keep: int) -> int:
        with self._wlock:
            self._w.execute("BEGIN IMMEDIATE")
            try:
                n = changelog.trim(self._w, before_at, keep)
                self._w.execute("COMMIT")
            except BaseException:
                self._w.execute("ROLLBACK")
                raise
            return n

    def snapshot(self, dest: str | Path) -> Position:
        """A consistent copy of the whole ledger in `dest` (SQLite's backup API), 0600, and
        the position it holds."""
        dest = Path(dest)
        os.close(os.open(dest, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, FILE_MODE))
        out = sqlite3.connect(dest)
        try:
            with self._rlock:
                self._r.backup(out)
            return changelog.position(out)
        finally:
            out.close()

    def restore(self, source: str | Path) -> Position:
        """Replace this ledger's content by a snapshot's (its lineage too); its position."""
        src = sqlite3.connect(f"file:{source}?mode=ro", uri=True)
        try:
            with self._wlock, self._rlock:
                src.backup(self._w)
                self._head = changelog.head(self._w)
        finally:
            src.close()
        return self.position()

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
        cond, args = where({"job = ?": job, "state = ?": state,
                            "nominal >= ?": since and nominal_iso(parse_time(since)),
                            "nominal <= ?": until and nominal_iso(parse_time(until))})
        return self._runs(f"SELECT * FROM runs{cond} ORDER BY nominal DESC, attempt DESC LIMIT ?",
                          [*args, max(0, int(limit))])

    def final_before(self, nominal: str, limit: int) -> list[Run]:
        """Finished runs with a nominal time before `nominal`, oldest first (retention)."""
        final = ", ".join(f"'{s}'" for s in FINAL_STATES)
        return self._runs(f"SELECT * FROM runs WHERE nominal < ? AND state IN ({final}) "
                          "ORDER BY nominal LIMIT ?", (nominal, limit))

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
        cond, args = where({"job = ?": job, "at >= ?": since and utc_iso(parse_time(since))})
        return self._query(f"SELECT * FROM audit{cond} ORDER BY at DESC, id DESC LIMIT ?",
                           [*args, max(0, limit)])

    def counts(self) -> dict[str, int]:
        rows = self._query("SELECT state, COUNT(*) AS n FROM runs GROUP BY state")
        return {r["state"]: r["n"] for r in rows}


def where(conditions: dict[str, Any]) -> tuple[str, list[Any]]:
    """The ` WHERE … AND …` of the conditions (each an SQL test with one `?`) whose value is set,
    and their arguments; "" and [] when none is: the readers' optional filters."""
    kept = [(test, value) for test, value in conditions.items() if value]
    return (" WHERE " + " AND ".join(t for t, _ in kept) if kept else ""), [v for _, v in kept]


class Waiter(Protocol):
    """Sync replication (scheduler/replication/waiter.py): a commit's answer waits for it."""

    def must_wait(self, seq: int) -> bool: ...

    async def wait(self, seq: int) -> bool: ...


class BatchWriter:
    """Coalesces the writes that coroutines ask for within one event-loop turn into one
    transaction: with synchronous=FULL the fsync is paid per batch, not per run. With a sync
    `waiter`, a batch is answered once the follower holds it (one round trip per batch; the
    next batches commit meanwhile)."""

    def __init__(self, ledger: Ledger, waiter: Waiter | None = None) -> None:
        self.ledger = ledger
        self.waiter = waiter
        self._pending: list[tuple[list[Change], asyncio.Future[list[bool]]]] = []
        self._waits: set[asyncio.Task[None]] = set()

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
        seq = self.ledger.head
        if self.waiter is not None and any(done) and self.waiter.must_wait(seq):
            task = asyncio.get_running_loop().create_task(self._answer_synced(batch, done, seq))
            self._waits.add(task)
            task.add_done_callback(self._waits.discard)
            return
        self._answer(batch, done)

    async def _answer_synced(self, batch: list[tuple[list[Change], asyncio.Future[list[bool]]]],
                             done: list[bool], seq: int) -> None:
        assert self.waiter is not None
        await self.waiter.wait(seq)
        self._answer(batch, done)

    @staticmethod
    def _answer(batch: list[tuple[list[Change], asyncio.Future[list[bool]]]],
                done: list[bool]) -> None:
        i = 0
        for changes, fut in batch:
            if not fut.done():
                fut.set_result(done[i:i + len(changes)])
            i += len(changes)
