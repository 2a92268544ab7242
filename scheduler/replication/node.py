"""This node's replication: the parts (source, sync waiter, follower) wired for the daemon, the
term's hooks (drain before activation, follow on standby), and the `replication` view that
status and /health give (the contract the OCF agent reads: docs/interfaces.md)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiohttp import web

from scheduler.config import ReplicationConfig, read_token, read_tokens
from scheduler.ledger import Ledger
from scheduler.replication.follower import IN_SYNC_CONTACT, Follower
from scheduler.replication.source import Handover as ReceiveHandover
from scheduler.replication.source import Source
from scheduler.replication.waiter import ALONE, PRIMARY, SyncWaiter

DRAIN = 3.0  # seconds a promotion gives the drain of the stream (a dead source: connect timeout)
OFF = "off"


class Replication:
    def __init__(self, config: ReplicationConfig | None, ledger: Ledger, output_dir: Path,
                 role: Callable[[], str], handover: ReceiveHandover | None = None) -> None:
        self.ledger, self.role = ledger, role
        self.stopped = False
        self.unmirrored: list[tuple[str, int]] = []  # runs whose output the follower lacks
        self.mode = config.mode if config is not None and config.peers else OFF
        self.tokens = (read_tokens(config.token_file) if config is not None
                       and config.token_file else frozenset())
        timeout = config.sync_timeout if config is not None else 2.0
        self.waiter = SyncWaiter(lambda: ledger.head, self.mode == "sync", timeout)
        self.source = Source(ledger, self.waiter, output_dir, role, handover)
        self.follower = (Follower(ledger, config.peers, read_token(config.token_file),
                                  str(config.ca) if config.ca else None, output_dir)
                         if self.mode != OFF and config is not None and config.token_file
                         else None)

    @property
    def following(self) -> bool:
        """A standby of this node follows a source (its ledger is a replica, not its own)."""
        return self.follower is not None

    def start(self) -> None:
        self.source.start()

    def routes(self, app: web.Application) -> None:
        self.source.add_routes(app)

    # -- the term's hooks --------------------------------------------------------------------
    async def before_active(self) -> None:
        """Before this node acts as active: take what the source still has, stop following."""
        if self.follower is not None and self.follower.running:
            await self.follower.stop(DRAIN)
            self.unmirrored += self.follower.unmirrored()
        self.waiter.reset()

    def on_standby(self) -> None:
        if self.follower is not None and not self.stopped:
            self.follower.start()

    async def stop(self) -> None:
        """The daemon is stopping: stop following, and do not start again."""
        self.stopped = True
        if self.follower is not None:
            await self.follower.stop(0.0)

    # -- what it says ------------------------------------------------------------------------
    def active_url(self) -> str:
        return (self.follower.source if self.follower is not None else None) or "unknown"

    def view(self) -> dict[str, Any]:
        pos = self.ledger.position()
        out: dict[str, Any] = {"mode": self.mode, "lineage": pos.lineage, "seq": pos.seq,
                               "epoch": pos.epoch, "source": None, "lag_seconds": None,
                               "behind": 0}
        if self.role() == "active":
            w = self.waiter
            heard = w.acked_at is not None and time.monotonic() - w.acked_at < IN_SYNC_CONTACT
            out["state"] = PRIMARY if w.state == PRIMARY and heard else ALONE
        elif self.follower is not None:
            f = self.follower.view()
            out.update(state=f.state, source=f.source, behind=f.behind,
                       lag_seconds=None if f.lag_seconds is None else round(f.lag_seconds, 3))
        else:
            out["state"] = "never"
        return out
