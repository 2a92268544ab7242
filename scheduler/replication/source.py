"""The source: the /v1/replication endpoints a follower pulls from (docs/interfaces.md).

They take the replication token only (api.py checks it; the API tokens are refused here): a
replica is the whole ledger, and a token that may pause a job need not read it all.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp import web

from scheduler.changelog import Terms
from scheduler.ledger import Ledger
from scheduler.protocol import STREAMS
from scheduler.replication.waiter import SyncWaiter
from scheduler.runs import output_base

log = logging.getLogger("hasched.replication")

MAX_WAIT = 30.0  # seconds a long poll may hold
MAX_LIMIT = 10_000  # entries per answer
Handover = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]


class BadQuery(ValueError):
    """A parameter a follower sent that cannot be used; the message names it."""


def _int(query: Any, name: str, default: int | None = None) -> int:
    value = query.get(name)
    if value in (None, ""):
        if default is None:
            raise BadQuery(f"query parameter {name!r} is required")
        return default
    try:
        return int(value)
    except ValueError:
        raise BadQuery(f"query parameter {name!r}: not an integer: {value!r}") from None


def epoch_at(terms: Terms, seq: int) -> int | None:
    """The epoch under which entry `seq` was written, per a terms history."""
    found = None
    for epoch, first in terms:
        if first <= seq:
            found = epoch
    return found


class Source:
    def __init__(self, ledger: Ledger, waiter: SyncWaiter, output_dir: Path,
                 role: Callable[[], str], handover: Handover | None = None) -> None:
        self.ledger, self.waiter, self.output_dir, self.role = ledger, waiter, output_dir, role
        self.handover = handover
        self._loop: asyncio.AbstractEventLoop | None = None
        self._new = asyncio.Event()
        ledger.on_commit(self._committed)

    def start(self) -> None:
        """Bind to the running loop (commits wake long polls from any thread)."""
        self._loop = asyncio.get_running_loop()

    def _committed(self, seq: int) -> None:
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._new.set)

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get("/v1/replication/status", self._status)
        app.router.add_get("/v1/replication/changes", self._changes)
        app.router.add_get("/v1/replication/snapshot", self._snapshot)
        app.router.add_get("/v1/replication/output/{run_id}/{attempt}/{stream}", self._output)
        app.router.add_post("/v1/replication/handover", self._handover)

    def _where(self) -> dict[str, Any]:
        return {"role": self.role(), "position": self.ledger.position().to_json(),
                "terms": [list(t) for t in self.ledger.terms()],
                "trimmed": self.ledger.trim_point()}

    async def _status(self, request: web.Request) -> web.Response:
        return web.json_response(self._where())

    async def _changes(self, request: web.Request) -> web.Response:
        q = request.query
        try:
            after, epoch = _int(q, "after"), _int(q, "epoch", 0)
            wait = min(max(float(q.get("wait") or 0), 0.0), MAX_WAIT)
            limit = min(max(_int(q, "limit", 1000), 1), MAX_LIMIT)
        except ValueError as e:
            return web.json_response({"error": str(e)}, status=400)
        pos, terms = self.ledger.position(), self.ledger.terms()
        if q.get("lineage") != pos.lineage:
            return web.json_response({"error": "another lineage, take a snapshot",
                                      **self._where()}, status=410)
        if after > pos.seq or (after and epoch_at(terms, after) != epoch):
            fork = after if after <= pos.seq else None
            known = dict(terms)
            if epoch in known:  # our entries of its last epoch end where?
                later = [first for e, first in terms if e > epoch]
                fork = min(after, later[0] - 1 if later else pos.seq)
            return web.json_response({"error": "diverged", "fork": fork, **self._where()},
                                     status=409)
        if after < self.ledger.trim_point():
            return web.json_response({"error": "behind the log, take a snapshot",
                                      **self._where()}, status=410)
        self.waiter.ack(after)  # everything up to `after` is durable on the follower
        entries = self.ledger.raw_entries(after, limit)
        if not entries and wait > 0:
            self._new.clear()
            if self.ledger.head <= after:
                try:
                    await asyncio.wait_for(self._new.wait(), wait)
                except TimeoutError:
                    pass
            entries = self.ledger.raw_entries(after, limit)
        # Entries as [seq, epoch, at, images-as-JSON-text]: the stored text goes out as it is.
        return web.json_response({"entries": [e.to_wire() for e in entries],
                                  "head": self.ledger.head, "role": self.role(),
                                  "epoch": self.ledger.epoch()})

    async def _snapshot(self, request: web.Request) -> web.StreamResponse:
        fd, name = tempfile.mkstemp(prefix=".snapshot-", dir=self.ledger.path.parent)
        os.close(fd)
        try:
            pos = await asyncio.to_thread(self.ledger.snapshot, name)
            log.info("replication: snapshot at seq %d for %s", pos.seq, request.remote)
            response = web.StreamResponse(headers={
                "Content-Type": "application/vnd.sqlite3",
                "X-Hasched-Position": json.dumps(pos.to_json())})
            await response.prepare(request)
            with open(name, "rb") as f:
                while chunk := await asyncio.to_thread(f.read, 1 << 20):
                    await response.write(chunk)
            await response.write_eof()
            return response
        finally:
            os.unlink(name)

    async def _output(self, request: web.Request) -> web.Response:
        m = request.match_info
        stream = m["stream"]
        try:
            attempt = int(m["attempt"])
        except ValueError:
            return web.json_response({"error": f"attempt: not an integer: {m['attempt']!r}"},
                                     status=400)
        if stream not in STREAMS:
            return web.json_response({"error": f"stream: must be stdout or stderr, got "
                                      f"{stream!r}"}, status=400)
        run = self.ledger.get_attempt(m["run_id"], attempt)
        if run is None or not run.output_path:
            return web.json_response({"error": "no output kept for this run"}, status=404)
        base = output_base(self.output_dir, run.output_path)
        path = base.with_name(f"{base.name}.{stream}")
        if not path.exists():
            return web.Response(text="", content_type="text/plain")  # nothing written: empty
        text = await asyncio.to_thread(path.read_text, errors="replace")
        return web.Response(text=text, content_type="text/plain", charset="utf-8")

    async def _handover(self, request: web.Request) -> web.Response:
        if self.handover is None or self.role() != "active":
            return web.json_response({"error": "this scheduler is not active"}, status=409)
        try:
            body = await request.json()
        except ValueError:
            return web.json_response({"error": "body: not JSON"}, status=400)
        if not isinstance(body, dict):
            return web.json_response({"error": "body: must be an object"}, status=400)
        return web.json_response(await self.handover(body))
