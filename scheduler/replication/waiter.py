"""Sync mode: a write is answered once the follower holds it durably.

The follower's ack is the `after=` of its change requests: everything up to that seq is
committed on its side. `BatchWriter` asks `wait(seq)` after each group commit, so one round
trip is paid per batch, not per write. When the follower does not cover a batch within
`sync_timeout`, the active goes on ALONE (degraded: /health, metrics, the log say so) and stops
waiting until the follower has caught up with the head again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

log = logging.getLogger("hasched.replication")

PRIMARY = "primary"
ALONE = "alone"


class SyncWaiter:
    def __init__(self, head: Callable[[], int], sync: bool, timeout: float) -> None:
        """`head()`: the seq of the ledger's last entry; `sync`: False for async mode (wait
        never waits)."""
        self.head, self.sync, self.timeout = head, sync, timeout
        self.acked = 0
        self.acked_at: float | None = None  # monotonic time of the last ack
        # No follower has acked yet: alone until one covers the head (a standby that is down
        # when the active starts costs no write a timeout).
        self.state = ALONE
        self._waiting: list[tuple[int, asyncio.Future[None]]] = []

    def reset(self) -> None:
        """A new active term: no follower of ours yet; writes wait for one only once it has
        caught up with our head."""
        self.state, self.acked, self.acked_at = ALONE, 0, None

    def ack(self, seq: int) -> None:
        """The follower holds everything up to `seq`."""
        self.acked_at = time.monotonic()
        if seq > self.acked:
            self.acked = seq
        still = []
        for want, fut in self._waiting:
            if want <= self.acked:
                if not fut.done():
                    fut.set_result(None)
            else:
                still.append((want, fut))
        self._waiting = still
        if self.state == ALONE and self.acked >= self.head():
            self._set(PRIMARY, f"the follower is in sync again (seq {self.acked})")

    def must_wait(self, seq: int) -> bool:
        return self.sync and self.state == PRIMARY and seq > self.acked

    async def wait(self, seq: int) -> bool:
        """Until the follower's ack covers `seq` (True), or the timeout: then alone (False)."""
        if not self.must_wait(seq):
            return self.acked >= seq
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.append((seq, fut))
        try:
            await asyncio.wait_for(asyncio.shield(fut), self.timeout)
            return True
        except TimeoutError:
            if self.state == PRIMARY:
                self._set(ALONE, f"the follower did not confirm seq {seq} within "
                          f"{self.timeout:g}s (it holds {self.acked}): going on alone")
            for _, other in self._waiting:  # every write waiting goes on with us
                if not other.done():
                    other.set_result(None)
            self._waiting = []
            return False

    def _set(self, state: str, why: str) -> None:
        self.state = state
        log.warning("replication: %s", why)
