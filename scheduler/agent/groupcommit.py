"""Group commit: every write the agent makes goes through one thread with its own SQLite
connection, which commits whatever has queued up meanwhile in ONE transaction (one fsync).

The event loop never waits on an fsync: it queues a write and awaits its future, which is
settled only once the transaction holding it is committed (synchronous=FULL, so on disk). A
burst of fifty dispatches thus costs one fsync instead of fifty, and none of them is answered
before its record is durable.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import sqlite3
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

log = logging.getLogger("hasched.agent")

# One write: a few statements that stand or fall together (they share a SAVEPOINT), so one bad
# write (a duplicate key) does not undo the others committed with it.
Op = Callable[[sqlite3.Connection], Any]
MAX_BATCH = 2000  # bounds the time a transaction holds the write lock


def connect(path: Path) -> sqlite3.Connection:
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    db.row_factory = sqlite3.Row
    db.execute("PRAGMA busy_timeout=30000")
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    return db


class GroupCommitter:
    def __init__(self, path: Path):
        self._db = connect(path)
        self._queue: queue.SimpleQueue[
            tuple[Sequence[Op], asyncio.Future[Any], asyncio.AbstractEventLoop] | None
        ] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._loop, name="agent-commit", daemon=True)
        self._thread.start()

    def submit(self, ops: Sequence[Op]) -> asyncio.Future[Any]:
        """Queue `ops` now (so writes commit in the order they were submitted); the future
        gets the last op's return value once they are durable, or the error that undid them."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Any] = loop.create_future()
        self._queue.put((ops, fut, loop))
        return fut

    def close(self) -> None:
        """Commit what is queued, then stop."""
        self._queue.put(None)
        self._thread.join()
        self._db.close()

    def _loop(self) -> None:
        stopping = False
        while not stopping:
            item = self._queue.get()
            if item is None:
                break
            batch = [item]
            while len(batch) < MAX_BATCH:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    stopping = True
                    break
                batch.append(nxt)
            outcomes = self._commit([ops for ops, _, _ in batch])
            by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[Any], Any]]] = {}
            for (_, fut, loop), outcome in zip(batch, outcomes, strict=True):
                by_loop.setdefault(loop, []).append((fut, outcome))
            for loop, settled in by_loop.items():
                try:
                    loop.call_soon_threadsafe(_settle, settled)
                except RuntimeError:  # that loop is closed: nobody waits any more
                    pass

    def _commit(self, batch: list[Sequence[Op]]) -> list[Any]:
        db = self._db
        outcomes: list[Any] = []
        try:
            db.execute("BEGIN IMMEDIATE")
            for ops in batch:
                db.execute("SAVEPOINT op")
                try:
                    value = None
                    for op in ops:
                        value = op(db)
                    db.execute("RELEASE op")
                    outcomes.append(value)
                except Exception as e:  # this write only; the others go on
                    db.execute("ROLLBACK TO op")
                    db.execute("RELEASE op")
                    outcomes.append(_Failed(e))
            db.execute("COMMIT")
            return outcomes
        except sqlite3.Error as e:
            log.error("committing %d write(s) failed: %s", len(batch), e)
            if db.in_transaction:
                db.execute("ROLLBACK")
            return [_Failed(e)] * len(batch)


class _Failed:
    def __init__(self, error: Exception):
        self.error = error


def _settle(settled: list[tuple[asyncio.Future[Any], Any]]) -> None:
    for fut, outcome in settled:
        if fut.done():
            continue
        if isinstance(outcome, _Failed):
            fut.set_exception(outcome.error)
        else:
            fut.set_result(outcome)
