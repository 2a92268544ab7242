"""The follower: a standby's copy of the active's ledger, kept by pulling its change log.

It follows whichever peer says (in /health) it is active with the highest epoch, applies each
answer's entries in one transaction (row images and the entries, same seq), and so acks them
with its next request (`after=`). It applies no scheduling policy. Behind the source's trim
point, or on another lineage, it resyncs from a snapshot; with a diverged tail (entries the
source never had: it was active itself), it hands the tail to `on_diverged`, then resyncs.
Collected runs' output is mirrored into this node's output directory, in the background.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import ssl
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from scheduler.changelog import Entry, RawEntry
from scheduler.ledger import Ledger, LedgerError
from scheduler.replication.fork import fork_point
from scheduler.replication.handover import Handover
from scheduler.retention import remove_output
from scheduler.runs import FINAL_STATES, Run, output_base
from scheduler.statedir import write_private_files
from scheduler.times import parse_time, utc_now

log = logging.getLogger("hasched.replication")

POLL_WAIT = 5.0  # seconds a long poll is held by the source
BATCH = 5000  # entries asked for at once
CONNECT_TIMEOUT = 1.5  # a dead peer drops SYNs: a short bound, so a promotion is not held
# The drain at a promotion goes over new connections with tighter bounds: a kept-alive one to a
# crashed source would wait out the whole drain (nothing answers, nothing resets it), and a
# source on the same LAN that is alive connects in well under DRAIN_CONNECT and answers a
# wait=0 request within DRAIN_READ (a SIGSTOPped one accepts the connection, never answers).
DRAIN_CONNECT = 0.5
DRAIN_READ = 1.0
RETRY_EVERY = 1.0
INLINE_APPLY = 20  # entries applied in the loop's own thread; more go to a worker thread
IN_SYNC_CONTACT = POLL_WAIT + 5.0  # without an answer for longer, a standby is lagging

class SourceGone(RuntimeError):
    """The source did not answer, or answers as something else than the active."""


@dataclass(frozen=True)
class FollowState:
    """What status and /health say of a standby's replica."""

    state: str  # in-sync | lagging | never
    source: str | None
    lag_seconds: float | None
    behind: int


class Follower:
    def __init__(self, ledger: Ledger, peers: tuple[str, ...], token: str,  # noqa: PLR0913 - its settings, given by node.py
                 ca: str | None, output_dir: Path) -> None:
        self.ledger, self.peers, self.output_dir = ledger, peers, output_dir
        self._headers = {"Authorization": f"Bearer {token}"}
        self._ca = ca
        self._session: aiohttp.ClientSession | None = None
        self._task: asyncio.Task[None] | None = None
        self._mirror_task: asyncio.Task[None] | None = None
        self._mirror: asyncio.Queue[tuple[str, int, str]] = asyncio.Queue()
        self.source: str | None = None
        self.applied_any = False
        self.behind = 0
        self.lag_seconds: float | None = None
        self._contact: float | None = None  # monotonic time of the last answer

    # -- life ------------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def start(self) -> None:
        if not self.running:
            self._task = asyncio.get_running_loop().create_task(self._loop())
            self._mirror_task = asyncio.get_running_loop().create_task(self._mirror_loop())
            log.info("replication: following (peers: %s)", ", ".join(self.peers) or "none")

    async def stop(self, drain: float = 3.0) -> int:
        """Stop following, after taking what the source still has (within `drain` seconds:
        a dead source costs a connect timeout). The number of entries drained."""
        task, self._task = self._task, None
        if task is None:
            return 0
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        if self._session is not None:  # its kept-alive connections may lead to a dead source
            await self._session.close()
            self._session = None
        drained = 0
        if self.source is not None and drain > 0:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=self._ssl() or True, force_close=True),
                timeout=aiohttp.ClientTimeout(total=drain, sock_connect=DRAIN_CONNECT,
                                              sock_read=DRAIN_READ))
            try:
                drained = await asyncio.wait_for(self._drain(), drain)
            except (TimeoutError, SourceGone, aiohttp.ClientError, OSError, LedgerError) as e:
                log.warning("replication: drain from %s stopped: %s", self.source,
                            str(e) or type(e).__name__)
        if self._mirror_task is not None:
            self._mirror_task.cancel()
            await asyncio.gather(self._mirror_task, return_exceptions=True)
        if self._session is not None:
            await self._session.close()
            self._session = None
        log.info("replication: stopped following at seq %d (%d drained)", self.ledger.head,
                 drained)
        return drained

    def unmirrored(self) -> list[tuple[str, int]]:
        """The runs whose output was still to be mirrored (the queue is emptied): a promoted
        node fetches it from their agents instead (Collector.recover_output)."""
        out = []
        while not self._mirror.empty():
            run_id, attempt, _ = self._mirror.get_nowait()
            out.append((run_id, attempt))
        return out

    def view(self) -> FollowState:
        recent = (self._contact is not None
                  and time.monotonic() - self._contact < IN_SYNC_CONTACT)
        if not self.applied_any:
            state = "never"
        elif recent and self.behind == 0 and self.running:
            state = "in-sync"
        else:
            state = "lagging"
        return FollowState(state, self.source, self.lag_seconds, self.behind)

    # -- HTTP --------------------------------------------------------------------------------
    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            ctx = self._ssl()
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=POLL_WAIT + 30, sock_connect=CONNECT_TIMEOUT),
                connector=aiohttp.TCPConnector(ssl=ctx) if ctx else None)
        return self._session

    def _ssl(self) -> Any:
        """The TLS context that verifies the peers (None: the default, or plain HTTP)."""
        return ssl.create_default_context(cafile=self._ca) if self._ca else None

    async def _get(self, url: str, **params: Any) -> tuple[int, Any]:
        async with self._client().get(url, params=params, headers=self._headers) as r:
            return r.status, await r.json(content_type=None)

    async def _post(self, url: str, body: dict[str, Any]) -> dict[str, Any]:
        async with self._client().post(url, json=body, headers=self._headers) as r:
            answer = await r.json(content_type=None)
            if r.status != 200:
                raise SourceGone(f"{url} answered {r.status}: {answer.get('error')}")
            return answer

    async def find_source(self) -> str | None:
        """The peer that says it is active, with the highest epoch."""
        async def health(peer: str) -> tuple[int, str] | None:
            try:
                async with self._client().get(f"{peer}/health",
                                              timeout=aiohttp.ClientTimeout(total=3)) as r:
                    body = await r.json(content_type=None)
            except (aiohttp.ClientError, OSError, TimeoutError, ValueError):
                return None
            if body.get("role") == "active" and isinstance(body.get("epoch"), int):
                return body["epoch"], peer
            return None

        found = [h for h in await asyncio.gather(*(health(p) for p in self.peers)) if h]
        return max(found)[1] if found else None

    # -- following -----------------------------------------------------------------------------
    async def _loop(self) -> None:
        while True:
            try:
                source = await self.find_source()
                if source != self.source and source is not None:
                    log.info("replication: following %s", source)
                self.source = source or self.source
                if source is None:
                    if self.source is not None:
                        # No active peer: in a switchover the source was demoted and another
                        # node is about to be promoted. A demoted source still serves what it
                        # has, and the promotion (the OCF agent waits for the positions to
                        # match) needs this node to take it now, not once a new active exists.
                        await self.step(self.source, 0.0)
                    await asyncio.sleep(RETRY_EVERY)
                    continue
                while await self.step(source, POLL_WAIT):
                    pass
            except asyncio.CancelledError:
                raise
            except (SourceGone, aiohttp.ClientError, OSError, TimeoutError, ValueError,
                    LedgerError) as e:
                log.warning("replication: %s: %s", self.source, str(e) or type(e).__name__)
            await asyncio.sleep(RETRY_EVERY)

    async def _drain(self) -> int:
        assert self.source is not None
        before = self.ledger.head
        await self.step(self.source, 0.0)
        while self.behind:  # a demoted source (a switchover) still serves what it has
            await self.step(self.source, 0.0)
        return self.ledger.head - before

    async def step(self, source: str, wait: float) -> bool:
        """One request for changes, applied; False when the source is no longer the active."""
        pos = self.ledger.position()
        status, body = await self._get(f"{source}/v1/replication/changes", lineage=pos.lineage,
                                       after=pos.seq, epoch=pos.epoch, wait=wait, limit=BATCH)
        self._contact = time.monotonic()
        if status == 410:
            log.warning("replication: %s: %s; resyncing", source, body.get("error"))
            await self.resync(source)
            return True
        if status == 409:
            await self._diverged(source, body)
            return True
        if status != 200:
            raise SourceGone(f"answered {status}: {body.get('error') if body else ''}")
        entries = [RawEntry.from_wire(e) for e in body["entries"]]
        if entries:
            gone: list[Run] = []

            def deleted(table: str, row: dict[str, Any]) -> None:
                if table == "runs":
                    gone.append(Run.from_row(row))

            if len(entries) > INLINE_APPLY:  # a catch-up: the loop serves reads meanwhile
                _, images = await asyncio.to_thread(self.ledger.append_raw, entries, deleted)
            else:  # in step: the thread hop would cost the sync ack more than the apply
                _, images = self.ledger.append_raw(entries, deleted)
            if gone:  # history pruned on the active: its output goes here too
                await asyncio.to_thread(remove_output, self.output_dir, gone)
            self.applied_any = True
            self._queue_output(images)
        self.behind = max(0, int(body["head"]) - self.ledger.head)
        last = entries[-1].at if entries else None
        self.lag_seconds = (0.0 if not self.behind else
                            (utc_now() - parse_time(last)).total_seconds() if last else None)
        if not entries and not self.behind:
            self.applied_any = True  # in step with the source: nothing to apply is applied
        return body.get("role") == "active"

    async def _diverged(self, source: str, body: dict[str, Any]) -> None:
        mine = self.ledger.terms()
        theirs = tuple((int(e), int(s)) for e, s in body.get("terms", []))
        fork = fork_point(mine, self.ledger.head, theirs, int(body["position"]["seq"]))
        tail = self.ledger.entries(fork, 1 << 30)
        log.warning("replication: diverged from %s at seq %d: %d entries of ours after it",
                    source, fork, len(tail))
        if tail:
            await Handover.give(source, fork, tail, self._post)  # raises: tried again later
        await self.resync(source)

    async def resync(self, source: str) -> None:
        """Replace the ledger by a snapshot of the source's."""
        started = time.monotonic()
        fd, name = tempfile.mkstemp(prefix=".replica-", dir=self.ledger.path.parent)
        os.close(fd)
        try:
            async with self._client().get(f"{source}/v1/replication/snapshot",
                                          headers=self._headers,
                                          timeout=aiohttp.ClientTimeout(
                                              total=None, sock_connect=CONNECT_TIMEOUT,
                                              sock_read=60)) as r:
                if r.status != 200:
                    raise SourceGone(f"snapshot answered {r.status}")
                with open(name, "wb") as f:
                    async for chunk in r.content.iter_chunked(1 << 20):
                        await asyncio.to_thread(f.write, chunk)
            pos = await asyncio.to_thread(self.ledger.restore, name)
        finally:
            os.unlink(name)
        self.applied_any = True
        log.warning("replication: resynced from %s's snapshot: lineage %s seq %d in %.1fs",
                    source, pos.lineage, pos.seq, time.monotonic() - started)
        for run in self.ledger.list_runs(limit=1 << 30):
            if run.state in FINAL_STATES and run.output_path:
                self._mirror.put_nowait((run.run_id, run.attempt, run.output_path))

    # -- output ----------------------------------------------------------------------------------
    def _queue_output(self, entries: list[list[dict[str, Any]]]) -> None:
        for images in entries:
            for image in images:
                row = image.get("row")
                if (image["t"] == "runs" and row and row.get("output_path")
                        and row.get("state") in FINAL_STATES):
                    self._mirror.put_nowait((row["run_id"], int(row["attempt"]),
                                             row["output_path"]))

    async def _mirror_loop(self) -> None:
        while True:
            run_id, attempt, rel = await self._mirror.get()
            base = output_base(self.output_dir, rel)
            if Path(rel).is_absolute():
                continue  # the source's own path (a ledger from before relative paths)
            try:
                await self._fetch_output(run_id, attempt, base)
            except asyncio.CancelledError:
                raise
            except (aiohttp.ClientError, OSError, TimeoutError, ValueError) as e:
                log.warning("replication: output of %s attempt %d not mirrored: %s", run_id,
                            attempt, str(e) or type(e).__name__)

    async def _fetch_output(self, run_id: str, attempt: int, base: Path) -> None:
        if self.source is None:
            return
        texts = {}
        for stream in ("stdout", "stderr"):
            path = base.with_name(f"{base.name}.{stream}")
            if path.exists():
                continue
            url = f"{self.source}/v1/replication/output/{run_id}/{attempt}/{stream}"
            async with self._client().get(url, headers=self._headers) as r:
                if r.status != 200:
                    raise ValueError(f"answered {r.status}")
                text = await r.text()
            if text:
                texts[path] = text
        if texts:
            await asyncio.to_thread(write_private_files, base.parent, texts,
                                    "run output directory")


def describe(entry: Entry) -> list[str]:
    """One line per row image of an entry, for the log of a diverged tail."""
    return [f"seq {entry.seq} (epoch {entry.epoch}, {entry.at}): {i.table} "
            f"{json.dumps(i.row if i.row is not None else {'deleted': list(i.key)})}"
            for i in entry.images]
