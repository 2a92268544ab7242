"""The agent's durable memory: every run it accepted, keyed by (run_id, attempt), and the
highest scheduler epoch it has seen.

SQLite in WAL mode with synchronous=FULL: every commit is fsynced before it returns. The API
commits a run's record before it answers 201 and raises the epoch before it acts on an order, so
a power cut can lose only requests that were never answered; the scheduler retries those, and the
duplicate check then recognises whatever did reach the disk. Writes go through a GroupCommitter
(one thread, one transaction for whatever queued up meanwhile): that batches the fsyncs but
changes none of the above, since each write's future is settled only after its COMMIT.

Reads use the event loop's own connection; they see every write whose future has been settled.
"""

from __future__ import annotations

import asyncio
import hashlib
import shutil
import sqlite3
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

from scheduler.agent.groupcommit import GroupCommitter, connect
from scheduler.protocol import MAX_EPOCH, RUNNING, make_run
from scheduler.times import utc_iso, utc_now

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    job TEXT NOT NULL,
    epoch INTEGER NOT NULL,
    state TEXT NOT NULL,
    exit_code INTEGER,
    reason TEXT,
    pid INTEGER,            -- the job's process (leader of its process group)
    sup_pid INTEGER,        -- its supervisor
    sup_ctime REAL,         -- the supervisor's create time: a pid alone may have been reused
    timeout REAL,
    started_at TEXT NOT NULL,   -- ISO UTC, fixed width, so text order is time order
    finished_at TEXT,
    acked INTEGER NOT NULL DEFAULT 0,
    acked_at TEXT,
    stdout_bytes INTEGER NOT NULL DEFAULT 0,
    stderr_bytes INTEGER NOT NULL DEFAULT 0,
    truncated INTEGER NOT NULL DEFAULT 0,
    stdout_dropped INTEGER NOT NULL DEFAULT 0,  -- bytes beyond output_limit, thrown away
    stderr_dropped INTEGER NOT NULL DEFAULT 0,
    rundir TEXT NOT NULL,
    start_at TEXT,          -- set while a run sent ahead waits for its start time
    spec TEXT,              -- that run's order (JSON), to start it after an agent restart
    PRIMARY KEY (run_id, attempt)
);
CREATE INDEX IF NOT EXISTS runs_state ON runs (state);
CREATE INDEX IF NOT EXISTS runs_started ON runs (started_at);
"""


@dataclass
class RunRecord:
    run_id: str
    attempt: int
    job: str
    epoch: int
    state: str
    exit_code: int | None
    reason: str | None
    pid: int | None
    sup_pid: int | None
    sup_ctime: float | None
    timeout: float | None
    started_at: str
    finished_at: str | None
    acked: bool
    acked_at: str | None
    stdout_bytes: int
    stderr_bytes: int
    truncated: bool
    rundir: str
    stdout_dropped: int = 0
    stderr_dropped: int = 0
    # Set while an order sent ahead waits for its time (started_at then holds that time in the
    # store, so that `since` and the order of runs see it; the RUN shows started_at null).
    start_at: str | None = None
    spec: str | None = None

    @property
    def key(self) -> tuple[str, int]:
        return (self.run_id, self.attempt)

    def to_run(self) -> dict[str, Any]:
        return make_run(
            run_id=self.run_id, job=self.job, attempt=self.attempt, epoch=self.epoch,
            state=self.state, exit_code=self.exit_code, reason=self.reason, pid=self.pid,
            started_at=None if self.start_at else self.started_at,
            finished_at=self.finished_at, acked=self.acked,
            stdout_bytes=self.stdout_bytes, stderr_bytes=self.stderr_bytes,
            truncated=self.truncated, stdout_dropped=self.stdout_dropped,
            stderr_dropped=self.stderr_dropped,
        )


_COLUMNS = [f for f in RunRecord.__dataclass_fields__]


def rundir_name(run_id: str, attempt: int) -> str:
    """A file name for the run's directory: readable when possible, always unique and short."""
    name = quote(run_id, safe="@:+-._")
    if len(name) > 180 or name.startswith("."):
        name = hashlib.sha256(run_id.encode()).hexdigest()
    return f"{name}.{attempt}"


class StoreError(Exception):
    """The state store cannot be opened; str() is one line naming the file."""


class Store:
    def __init__(self, state_dir: str | Path):
        self.state_dir = Path(state_dir)
        self.output_dir = self.state_dir / "output"
        self.output_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        path = self.state_dir / "agent.sqlite"
        try:
            self.db = connect(path)
            self.db.executescript(SCHEMA)
            columns = {r[1] for r in self.db.execute("PRAGMA table_info(runs)")}
            for column in ("start_at", "spec"):  # a store from before orders sent ahead
                if column not in columns:
                    self.db.execute(f"ALTER TABLE runs ADD COLUMN {column} TEXT")
            for column in ("stdout_dropped", "stderr_dropped"):  # before they were counted
                if column not in columns:
                    self.db.execute(f"ALTER TABLE runs ADD COLUMN {column} "
                                    "INTEGER NOT NULL DEFAULT 0")
            row = self.db.execute("SELECT value FROM meta WHERE key='epoch'").fetchone()
            self.committer = GroupCommitter(path)
        except sqlite3.Error as e:
            raise StoreError(f"{path}: {e}") from None
        # The highest epoch seen, durable or on its way to the disk: an order below it is
        # refused at once, and one at it is committed after the raise (writes commit in order).
        self.seen_epoch: int = row[0] if row else 0

    def close(self) -> None:
        self.committer.close()
        self.db.close()

    # -- epoch --------------------------------------------------------------------------------
    def epoch(self) -> int:
        return self.seen_epoch

    def raise_epoch(self, epoch: int) -> asyncio.Future[Any]:
        """Remember `epoch` if it is higher than any seen so far; durable when the future is.
        The caller checked its bounds (protocol.MAX_EPOCH): nothing here may fail after the
        epoch in memory was raised."""
        if not 0 <= epoch <= MAX_EPOCH:
            raise ValueError(f"epoch {epoch} out of bounds")
        self.seen_epoch = max(self.seen_epoch, epoch)
        return self.committer.submit([lambda db: db.execute(
            "INSERT INTO meta (key, value) VALUES ('epoch', ?) "
            "ON CONFLICT(key) DO UPDATE SET value = max(value, excluded.value)",
            (epoch,),
        )])

    def reset_epoch(self, epoch: int) -> None:
        """Set the epoch to `epoch`, lower or not (`hasched agent reset-epoch`, agent stopped)."""
        if not 0 <= epoch <= MAX_EPOCH:
            raise ValueError(f"epoch {epoch} out of bounds")
        self.db.execute("INSERT INTO meta (key, value) VALUES ('epoch', ?) "
                        "ON CONFLICT(key) DO UPDATE SET value = excluded.value", (epoch,))
        self.db.commit()
        self.seen_epoch = epoch

    # -- runs ---------------------------------------------------------------------------------
    def _record(self, row: sqlite3.Row | None) -> RunRecord | None:
        if row is None:
            return None
        d = dict(row)
        d["acked"] = bool(d["acked"])
        d["truncated"] = bool(d["truncated"])
        return RunRecord(**d)

    def get(self, run_id: str, attempt: int) -> RunRecord | None:
        row = self.db.execute(
            "SELECT * FROM runs WHERE run_id=? AND attempt=?", (run_id, attempt)
        ).fetchone()
        return self._record(row)

    def insert(  # noqa: PLR0913 - keyword-only, one per column of the new record
        self, *, run_id: str, attempt: int, job: str, epoch: int, timeout: float | None,
        start_at: str | None = None, spec: str | None = None,
    ) -> tuple[RunRecord, asyncio.Future[Any]]:
        """The new run's record (started_at: now, when it is accepted; or `start_at`, when
        it waits for that time, then with the order `spec` to start it) and the future that
        says it is durable. The future's value is None, or the record already stored under
        that key (then nothing was written): the duplicate check runs in the committing
        thread, so the event loop does not wait on a lookup."""
        rec = RunRecord(
            run_id=run_id, attempt=attempt, job=job, epoch=epoch, state=RUNNING, exit_code=None,
            reason=None, pid=None, sup_pid=None, sup_ctime=None, timeout=timeout,
            started_at=start_at or utc_iso(), finished_at=None, acked=False,
            acked_at=None, stdout_bytes=0, stderr_bytes=0, truncated=False,
            rundir=str(self.output_dir / rundir_name(run_id, attempt)),
            start_at=start_at, spec=spec if start_at else None,
        )
        values = (rec.run_id, rec.attempt, rec.job, rec.epoch, rec.state, rec.timeout,
                  rec.started_at, rec.rundir, rec.start_at, rec.spec)

        def insert(db: sqlite3.Connection) -> RunRecord | None:
            cur = db.execute(
                "INSERT OR IGNORE INTO runs "
                "(run_id, attempt, job, epoch, state, timeout, started_at, rundir, start_at, "
                "spec) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", values,
            )
            if cur.rowcount == 1:
                return None
            return self._record(db.execute(
                "SELECT * FROM runs WHERE run_id=? AND attempt=?", (run_id, attempt)
            ).fetchone())

        return rec, self.committer.submit([insert])

    def update(self, run_id: str, attempt: int, **fields: Any) -> asyncio.Future[Any]:
        bad = set(fields) - set(_COLUMNS)
        if bad:
            raise KeyError(f"unknown run fields: {sorted(bad)}")
        sets = ", ".join(f"{k}=?" for k in fields)
        values = (*fields.values(), run_id, attempt)
        return self.committer.submit([lambda db: db.execute(
            f"UPDATE runs SET {sets} WHERE run_id=? AND attempt=?", values,
        )])

    def running(self) -> list[RunRecord]:
        rows = self.db.execute("SELECT * FROM runs WHERE state=?", (RUNNING,)).fetchall()
        return [r for r in map(self._record, rows) if r is not None]

    def count_running(self) -> int:
        return self.db.execute("SELECT count(*) FROM runs WHERE state=?", (RUNNING,)).fetchone()[0]

    def unacked(self) -> list[RunRecord]:
        rows = self.db.execute(
            "SELECT * FROM runs WHERE acked=0 ORDER BY started_at, run_id, attempt"
        ).fetchall()
        return [r for r in map(self._record, rows) if r is not None]

    def since(self, t: datetime) -> list[RunRecord]:
        rows = self.db.execute(
            "SELECT * FROM runs WHERE started_at >= ? ORDER BY started_at, run_id, attempt",
            (utc_iso(t),),
        ).fetchall()
        return [r for r in map(self._record, rows) if r is not None]

    def ack(self, run_id: str, attempt: int) -> asyncio.Future[Any]:
        values = (utc_iso(), run_id, attempt)
        return self.committer.submit([lambda db: db.execute(
            "UPDATE runs SET acked=1, acked_at=coalesce(acked_at, ?) WHERE run_id=? AND attempt=?",
            values,
        )])

    async def purge(self, retention: float) -> int:
        """Forget acknowledged runs older than `retention` seconds, with their output."""
        cutoff = utc_iso(utc_now() - timedelta(seconds=retention))
        rows = [(r["run_id"], r["attempt"], r["rundir"]) for r in self.db.execute(
            "SELECT run_id, attempt, rundir FROM runs WHERE acked=1 AND acked_at < ?", (cutoff,)
        ).fetchall()]
        if not rows:
            return 0
        # Output first: a crash in between leaves a record without output, never the reverse.
        await asyncio.get_running_loop().run_in_executor(
            None, lambda: [shutil.rmtree(d, ignore_errors=True) for _, _, d in rows])
        keys = [(run_id, attempt) for run_id, attempt, _ in rows]
        await self.committer.submit([lambda db: db.executemany(
            "DELETE FROM runs WHERE run_id=? AND attempt=?", keys)])
        return len(rows)
