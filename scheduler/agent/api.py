"""The agent's HTTP API (docs/interfaces.md, "Agent HTTP API").

Every request needs the bearer token. Every order carries an epoch: a lower one than the agent
has seen is refused with 409 and changes nothing; a higher one is stored durably before the
order is acted on.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp import web

import scheduler
from scheduler.agent.runner import Runner
from scheduler.agent.store import RunRecord, Store
from scheduler.protocol import (
    MAX_EPOCH_STEP,
    RUNNING,
    STREAMS,
    DispatchOrder,
    ProtocolError,
    parse_epoch_body,
)
from scheduler.times import parse_time

log = logging.getLogger("hasched.agent")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def error(status: int, message: str, **extra: Any) -> web.Response:
    return web.json_response({"error": message, **extra}, status=status)


class AgentAPI:
    def __init__(self, name: str, token: str, store: Store, runner: Runner,
                 containment: dict[str, Any] | None = None):
        self.name = name
        self.containment = containment or {"kind": "process-group"}
        self._token = token.encode()
        self.store = store
        self.runner = runner

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._auth], client_max_size=4 * 1024 * 1024)
        app.router.add_get("/v1/health", self.health)
        app.router.add_post("/v1/epoch", self.raise_epoch)
        app.router.add_post("/v1/runs", self.dispatch)
        app.router.add_get("/v1/runs", self.list_runs)
        app.router.add_get("/v1/runs/{run_id}/{attempt}", self.get_run)
        app.router.add_get("/v1/runs/{run_id}/{attempt}/output", self.output)
        app.router.add_post("/v1/runs/{run_id}/{attempt}/ack", self.ack)
        app.router.add_post("/v1/runs/{run_id}/{attempt}/cancel", self.cancel)
        return app

    # -- plumbing -----------------------------------------------------------------------------
    @web.middleware
    async def _auth(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        header = request.headers.get("Authorization", "")
        scheme, _, given = header.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(),
                                                                 self._token):
            log.warning("refused %s %s from %s: missing or wrong bearer token",
                        request.method, request.path, request.remote)
            return error(401, "missing or wrong bearer token")
        return await handler(request)

    @staticmethod
    async def _json(request: web.Request) -> Any:
        try:
            return json.loads(await request.text())
        except (ValueError, UnicodeDecodeError) as e:
            raise ProtocolError(f"body: not valid JSON: {str(e).splitlines()[0]}") from None

    async def _check_epoch(self, epoch: int) -> web.Response | None:
        """None when the order may proceed: the epoch is then at least `epoch`, durably, or on
        its way to the disk ahead of anything this order writes."""
        seen = self.store.epoch()
        if epoch < seen:
            log.warning("refused an order with stale epoch %d (seen %d)", epoch, seen)
            return error(409, f"stale epoch {epoch}, agent has seen {seen}", epoch=seen)
        if epoch > seen + MAX_EPOCH_STEP:
            # Promotions raise it by one: a jump this far is no scheduler's, and taken it would
            # fence every real scheduler off for good. The way back is reset-epoch.
            log.warning("refused epoch %d: more than %d above the highest seen (%d)", epoch,
                        MAX_EPOCH_STEP, seen)
            return error(400, f"field 'epoch': {epoch} is more than {MAX_EPOCH_STEP} above the "
                              f"highest this agent has seen ({seen}); an admin can set the "
                              f"agent's epoch with `hasched agent reset-epoch`")
        if epoch > seen:
            await asyncio.shield(self.store.raise_epoch(epoch))
            log.info("epoch raised from %d to %d", seen, epoch)
        return None

    def _run(self, rec: RunRecord) -> dict[str, Any]:
        run = rec.to_run()
        if rec.state == RUNNING:
            run["pid"] = self.runner.job_pid(rec.run_id, rec.attempt) or rec.pid
            out, err = self.runner.output_sizes(rec)
            run["output"]["stdout"], run["output"]["stderr"] = out, err
        return run

    def _lookup(self, request: web.Request) -> RunRecord | web.Response:
        run_id = request.match_info["run_id"]
        try:
            attempt = int(request.match_info["attempt"])
        except ValueError:
            return error(400, "attempt: must be an integer")
        rec = self.store.get(run_id, attempt)
        if rec is None:
            return error(404, f"no run {run_id} attempt {attempt}")
        return rec

    # -- endpoints ----------------------------------------------------------------------------
    async def health(self, request: web.Request) -> web.Response:
        return web.json_response({
            "name": self.name, "version": scheduler.__version__,
            "epoch": self.store.epoch(), "running": self.store.count_running(),
            "cgroups": self.containment,
        })

    async def raise_epoch(self, request: web.Request) -> web.Response:
        """A newly active scheduler announces its epoch before it does anything else, so that
        its cut-off predecessor is refused even before the new one sends this agent an order."""
        try:
            epoch = parse_epoch_body(await self._json(request))
        except ProtocolError as e:
            return error(400, str(e))
        refused = await self._check_epoch(epoch)
        if refused is not None:
            return refused
        # Committed even when already seen: an equal epoch raised by an order still on its way
        # to the disk is durable once this write is (writes commit in order).
        await asyncio.shield(self.store.raise_epoch(epoch))
        return web.json_response({"epoch": self.store.epoch()})

    async def dispatch(self, request: web.Request) -> web.Response:
        try:
            order = DispatchOrder.from_json(await self._json(request))
        except ProtocolError as e:
            return error(400, str(e))
        refused = await self._check_epoch(order.epoch)
        if refused is not None:
            return refused
        created, rec = await self.runner.start(order)
        if not created:
            log.info("run %s attempt %d dispatched again: already known, nothing started",
                     order.run_id, order.attempt)
            return web.json_response({"created": False, "run": self._run(rec)}, status=200)
        # Just recorded: no job pid nor output yet, nothing to look up.
        return web.json_response({"created": True, "run": rec.to_run()}, status=201)

    async def list_runs(self, request: web.Request) -> web.Response:
        since = request.query.get("since")
        if since is not None:
            try:
                records = self.store.since(parse_time(since))
            except ValueError as e:
                return error(400, f"since: {e}")
        elif request.query.get("unacked") in ("1", "true", "yes"):
            records = self.store.unacked()
        else:
            return error(400, "query: give unacked=1 or since=ISO-8601 time")
        return web.json_response({"runs": [self._run(r) for r in records]})

    async def get_run(self, request: web.Request) -> web.Response:
        rec = self._lookup(request)
        if isinstance(rec, web.Response):
            return rec
        return web.json_response(self._run(rec))

    async def output(self, request: web.Request) -> web.Response:
        stream = request.query.get("stream", "stdout")
        if stream not in STREAMS:
            return error(400, "stream: must be stdout or stderr")
        rec = self._lookup(request)
        if isinstance(rec, web.Response):
            return rec
        try:
            data = (Path(rec.rundir) / stream).read_bytes()
        except FileNotFoundError:
            data = b""
        return web.Response(text=data.decode("utf-8", errors="replace"),
                            content_type="text/plain")

    async def _order_on_run(self, request: web.Request) -> RunRecord | web.Response:
        """The run an order (ack, cancel) is about, or the answer refusing the order.

        The body is checked before the run is looked up and the epoch last, so a stale
        scheduler learns nothing about runs and a bad body never raises the epoch.
        """
        try:
            epoch = parse_epoch_body(await self._json(request))
        except ProtocolError as e:
            return error(400, str(e))
        rec = self._lookup(request)
        if isinstance(rec, web.Response):
            return rec
        refused = await self._check_epoch(epoch)
        return refused if refused is not None else rec

    async def ack(self, request: web.Request) -> web.Response:
        rec = await self._order_on_run(request)
        if isinstance(rec, web.Response):
            return rec
        if rec.state == RUNNING:
            return error(409, f"run {rec.run_id} attempt {rec.attempt} is still running")
        await asyncio.shield(self.store.ack(rec.run_id, rec.attempt))
        log.info("run %s attempt %d acknowledged", rec.run_id, rec.attempt)
        return web.json_response({"acked": True})

    async def cancel(self, request: web.Request) -> web.Response:
        rec = await self._order_on_run(request)
        if isinstance(rec, web.Response):
            return rec
        if rec.state == RUNNING:
            waiting = self.runner.cancel_waiting(rec.run_id, rec.attempt)
            if waiting is not None:
                await asyncio.shield(waiting)
                rec = self.store.get(rec.run_id, rec.attempt) or rec
            else:
                self.runner.cancel(rec.run_id, rec.attempt)
        return web.json_response(self._run(rec))
