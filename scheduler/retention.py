"""Run history retention on the active: final runs older than `history` (the [replication]
setting, 90 days by default) are deleted through `Ledger.apply`, so that the deletion goes into
the change log and a follower drops them too, with their kept output files. Independent of the
agents' retention, which only bounds what reconciliation can learn from them."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path

from scheduler.ledger import BatchWriter, Change, Ledger, nominal_iso
from scheduler.runs import Run, output_base
from scheduler.times import utc_now

log = logging.getLogger("hasched.scheduler")

HISTORY = 90 * 86400.0
PRUNE_EVERY = 600.0  # seconds between two passes of an active term
CHUNK = 1000  # deletions per transaction: the writers between two chunks are not held long


def remove_output(output_dir: Path, runs: list[Run]) -> None:
    """Deleted runs' kept output files (each may be absent: empty streams are not written)."""
    for run in runs:
        if run.output_path:
            base = output_base(output_dir, run.output_path)
            for stream in ("stdout", "stderr"):
                base.with_name(f"{base.name}.{stream}").unlink(missing_ok=True)


class HistoryPruner:
    def __init__(self, ledger: Ledger, writer: BatchWriter, output_dir: Path,
                 history: float = HISTORY, clock: Callable[[], datetime] = utc_now) -> None:
        self.ledger, self.writer, self.output_dir = ledger, writer, output_dir
        self.history, self.clock = history, clock

    async def prune(self) -> int:
        """Delete the final runs whose nominal time is older than the history; how many."""
        cutoff = nominal_iso(self.clock() - timedelta(seconds=self.history))
        total = 0
        while True:
            old = self.ledger.final_before(cutoff, CHUNK)
            if not old:
                break
            done = await self.writer.write([Change("delete", r.run_id, r.attempt) for r in old])
            gone = [r for r, ok in zip(old, done, strict=True) if ok]
            await asyncio.to_thread(remove_output, self.output_dir, gone)
            total += len(gone)
            if len(old) < CHUNK:
                break
        if total:
            log.info("history: %d run attempt(s) older than %s deleted", total, cutoff)
        return total

    async def loop(self, active: Callable[[], bool]) -> None:
        while active():
            try:
                await self.prune()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("history pass failed; trying again later")
            await asyncio.sleep(PRUNE_EVERY)
