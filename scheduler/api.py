"""The scheduler's REST API: health and metrics in the open, jobs and runs under /v1 with a token.

Depends only on the Service protocol, so it knows nothing of the planner or the ledger.
"""

from __future__ import annotations

import asyncio
import logging
import math
import ssl
import time
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from scheduler.apiparams import (
    MAX_COUNT,
    MAX_FORECAST,
    BadParam,
    int_param,
    iso_param,
    limit_param,
    state_param,
    stream_param,
    time_param,
)
from scheduler.audit import Actor
from scheduler.auth import ADMIN, OPERATOR, VIEWER, Principal, Tokens, bearer_token, token_allowed
from scheduler.metrics import CONTENT_TYPE, Metrics
from scheduler.service import Conflict, NotActive, NotFound, Service

log = logging.getLogger("hasched.api")

SERVICE_KEY = web.AppKey("service", Service)
TOKENS_KEY = web.AppKey("tokens", Tokens)
REPL_TOKENS_KEY = web.AppKey("replication_tokens", frozenset)
REPLICATION = "/v1/replication/"
METRICS_KEY = web.AppKey("metrics", Metrics)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


@web.middleware
async def _errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    start = time.monotonic()
    response = await _answer(request, handler)
    log.debug("%s %s from %s: %d in %.1f ms", request.method, request.path, request.remote,
              response.status, (time.monotonic() - start) * 1000)
    return response


async def _answer(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except NotFound as exc:
        return _error(404, _one_line(exc) or "not found")
    except NotActive as exc:
        return _error(409, _one_line(exc) or "this scheduler is standby")
    except Conflict as exc:
        return _error(409, _one_line(exc) or "conflict")
    except BadParam as exc:
        return _error(400, str(exc))
    except web.HTTPException as exc:
        if exc.status >= 400:
            reason = exc.reason.lower() if exc.reason else "error"
            return _error(exc.status, f"{reason}: {request.method} {request.path}")
        raise
    except Exception:
        log.exception("internal error on %s %s", request.method, request.path)
        return _error(500, "internal error; see the scheduler's log")


@web.middleware
async def _auth(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.path == "/v1" or request.path.startswith("/v1/"):
        presented = bearer_token(request.headers.get("Authorization"))
        if request.path.startswith(REPLICATION):
            # The replication endpoints take the replication token only, and it nothing else.
            if not token_allowed(presented, request.app[REPL_TOKENS_KEY]):
                request.app[REFUSALS_KEY].note(request)
                return _error(401, "missing or wrong bearer token")
            return await handler(request)
        who = request.app[TOKENS_KEY].find(presented)
        if who is None:
            # The token itself is never logged, only that one was wrong.
            request.app[REFUSALS_KEY].note(request)
            return _error(401, "missing or wrong bearer token")
        needed = _needed_role(request)
        if not who.may(needed):
            log.info("refused %s %s from %s to %s (%s): needs %s", request.method, request.path,
                     request.remote, who.name, who.role, needed)
            return _error(403, f"token {who.name!r} is a {who.role}: {request.method} "
                          f"{request.path} needs {needed}")
        request[PRINCIPAL_KEY] = who
    return await handler(request)


def _needed_role(request: web.Request) -> str:
    """Reads need a viewer, the operators' orders an operator, any other call an admin (so a
    route added without a word here is admin-only)."""
    if request.method in ("GET", "HEAD"):
        return VIEWER
    route = request.match_info.route.resource
    if route is None:  # no such route: the router's 404 or 405 follows
        return VIEWER
    return OPERATOR if route.canonical in OPERATOR_ROUTES else ADMIN


def _actor(request: web.Request) -> Actor:
    """Who asks, for the audit trail: the token's name and role, and the client's address."""
    who = request[PRINCIPAL_KEY]
    return Actor(who.name, who.role, request.remote or "")


async def _role_header(request: web.Request, response: web.StreamResponse) -> None:
    """Every answer under /v1 says which role answered it (a standby's reads are a replica's)."""
    if request.path.startswith("/v1/") and not request.path.startswith(REPLICATION):
        role = getattr(request.app[SERVICE_KEY], "public_role", None)
        if isinstance(role, str):
            response.headers["X-Hasched-Role"] = role


class Refusals:
    """401s: each at DEBUG, and at most one WARNING per `every` seconds with how many there
    were since the last one. A scan used to write one WARNING line per request."""

    def __init__(self, every: float = 60.0) -> None:
        self.every = every
        self.count = 0
        self._last = -math.inf

    def note(self, request: web.Request) -> None:
        log.debug("refused %s %s from %s: missing or wrong bearer token", request.method,
                  request.path, request.remote)
        self.count += 1
        now = time.monotonic()
        if now - self._last >= self.every:
            log.warning("refused %d request(s) with a missing or wrong bearer token in the last "
                        "%.0fs (the latest: %s %s from %s)", self.count,
                        min(now - self._last, self.every), request.method, request.path,
                        request.remote)
            self._last, self.count = now, 0


REFUSALS_KEY = web.AppKey("refusals", Refusals)
# The Principal of an authenticated request (web.RequestKey from aiohttp 3.13 on; setup.cfg
# allows older, where a plain key is the way).
PRINCIPAL_KEY: Any = (web.RequestKey("principal", Principal) if hasattr(web, "RequestKey")
                      else "hasched.principal")


def _one_line(exc: BaseException) -> str:
    text = exc.args[0] if len(exc.args) == 1 and isinstance(exc.args[0], str) else str(exc)
    return " ".join(text.split())


# -- handlers ------------------------------------------------------------------------------------

async def _health(request: web.Request) -> web.Response:
    return web.json_response(request.app[SERVICE_KEY].health())


async def _metrics(request: web.Request) -> web.Response:
    service, metrics = request.app[SERVICE_KEY], request.app[METRICS_KEY]
    # Role, epoch and agents are read at scrape time so the gauges can never lag a promotion.
    try:
        health = service.health()
        if health.get("role") in ("active", "standby"):
            metrics.set_role(health["role"])
        if isinstance(health.get("epoch"), int):
            metrics.set_epoch(health["epoch"])
        if isinstance(health.get("behind_seconds"), (int, float)):
            metrics.set_behind(health["behind_seconds"])
        repl = health.get("replication")
        if isinstance(repl, dict) and isinstance(repl.get("seq"), int):
            metrics.set_replication(repl["seq"], str(repl.get("state")),
                                    repl.get("lag_seconds"), int(repl.get("behind") or 0))
        status = service.status()
        if isinstance(status.get("agents_reachable"), int):
            metrics.set_agents_reachable(status["agents_reachable"])
        if isinstance(status.get("agents"), int):
            metrics.set_agents_total(status["agents"])
    except Exception:
        log.exception("could not refresh gauges before a scrape")
    return web.Response(body=metrics.render(), headers={"Content-Type": CONTENT_TYPE})


async def _list_jobs(request: web.Request) -> web.Response:
    # 100k jobs take a while to view and encode: piece by piece, yielding to the loop between
    # pieces so that /health and the rest go on meanwhile. Not in a thread: the loop thread
    # then waits for the GIL at each of its system calls and a /health took 100 ms.
    pieces = request.app[SERVICE_KEY].job_listing()
    first = next(pieces)  # a failure before the answer starts is still a JSON 500
    response = web.StreamResponse(headers={"Content-Type": "application/json; charset=utf-8"})
    await response.prepare(request)
    try:
        await response.write(first.encode())
        for piece in pieces:
            await response.write(piece.encode())  # waits for the client to drain, yields
            await asyncio.sleep(0)
        await response.write_eof()
    except ConnectionError:  # the client went away mid-answer: nothing to tell it
        log.debug("%s %s: the client left before the end of the answer", request.method,
                  request.path)
    return response


async def _get_job(request: web.Request) -> web.Response:
    return web.json_response(request.app[SERVICE_KEY].get_job(request.match_info["name"]))


async def _run_job(request: web.Request) -> web.Response:
    row = await request.app[SERVICE_KEY].run_now(request.match_info["name"], _actor(request))
    return web.json_response({"run": row}, status=202)


async def _pause_job(request: web.Request) -> web.Response:
    return web.json_response(
        await request.app[SERVICE_KEY].pause(request.match_info["name"], _actor(request)))


async def _resume_job(request: web.Request) -> web.Response:
    return web.json_response(
        await request.app[SERVICE_KEY].resume(request.match_info["name"], _actor(request)))


async def _cancel_run(request: web.Request) -> web.Response:
    answer = await request.app[SERVICE_KEY].cancel(request.match_info["run_id"],
                                                   _actor(request))
    return web.json_response(answer, status=202 if answer.get("outcome") == "requested" else 200)


async def _audit(request: web.Request) -> web.Response:
    q = request.query
    entries = request.app[SERVICE_KEY].audit(
        job=q.get("job") or None, since=iso_param("since", q.get("since")),
        limit=limit_param(q.get("limit")))
    return web.json_response({"entries": entries})


async def _next_fires(request: web.Request) -> web.Response:
    q = request.query
    count = int_param("count", q.get("count"), 10, MAX_COUNT)
    start = time_param("from", q.get("from"), datetime.now(UTC))
    return web.json_response(
        request.app[SERVICE_KEY].next_fires(request.match_info["name"], count, start))


async def _forecast(request: web.Request) -> web.Response:
    q = request.query
    start = time_param("from", q.get("from"), datetime.now(UTC))
    end = time_param("to", q.get("to"))
    if end <= start:
        raise BadParam("query parameter 'to': must be after 'from'")
    limit = limit_param(q.get("limit"), default=MAX_FORECAST, most=MAX_FORECAST)
    return web.json_response(await request.app[SERVICE_KEY].forecast(start, end, limit))


async def _list_runs(request: web.Request) -> web.Response:
    q = request.query
    runs = request.app[SERVICE_KEY].list_runs(
        job=q.get("job") or None,
        state=state_param(q.get("state")),
        since=iso_param("since", q.get("since")),
        until=iso_param("until", q.get("until")),
        limit=limit_param(q.get("limit")),
    )
    return web.json_response({"runs": runs})


async def _get_run(request: web.Request) -> web.Response:
    return web.json_response(request.app[SERVICE_KEY].get_run(request.match_info["run_id"]))


async def _run_output(request: web.Request) -> web.Response:
    stream = stream_param(request.query.get("stream"))
    text = await request.app[SERVICE_KEY].run_output(request.match_info["run_id"], stream)
    return web.Response(text=text, content_type="text/plain", charset="utf-8")


class _OneLine(logging.Filter):
    """aiohttp's own refusals of bad HTTP (an invalid request line, a header over 8 KiB) are
    logged with a traceback at ERROR: a scan would fill the log. They become one DEBUG line."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and record.exc_info[1] is not None:
            why = _one_line(record.exc_info[1]) or type(record.exc_info[1]).__name__
            record.msg = f"{record.getMessage()}: {why}"[:500]
            record.args, record.exc_info, record.exc_text = (), None, None
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        return logging.getLogger("hasched").isEnabledFor(record.levelno)


def http_logger() -> logging.Logger:
    """The logger to give aiohttp's server (AppRunner(..., logger=http_logger()))."""
    logger = logging.getLogger("hasched.api.http")
    if not any(isinstance(f, _OneLine) for f in logger.filters):
        logger.addFilter(_OneLine())
    return logger


# add_get: HEAD too.
_GETS = {
    "/health": _health, "/metrics": _metrics,
    "/v1/jobs": _list_jobs, "/v1/jobs/{name}": _get_job, "/v1/jobs/{name}/next": _next_fires,
    "/v1/forecast": _forecast,
    "/v1/runs": _list_runs, "/v1/runs/{run_id}": _get_run,
    "/v1/runs/{run_id}/output": _run_output, "/v1/audit": _audit,
}
_POSTS = {"/v1/jobs/{name}/run": _run_job, "/v1/jobs/{name}/pause": _pause_job,
          "/v1/jobs/{name}/resume": _resume_job, "/v1/runs/{run_id}/cancel": _cancel_run}
# The writes an operator may call; every other write needs an admin.
OPERATOR_ROUTES = frozenset(_POSTS)


def make_app(service: Service, tokens: Tokens | frozenset[str], metrics: Metrics,
             replication: Callable[[web.Application], None] | None = None,
             replication_tokens: frozenset[str] = frozenset()) -> web.Application:
    """The REST API application; the daemon runs it (with TLS from make_ssl_context if set).
    `tokens`: from auth.read_api_tokens, or bare tokens (admins). `replication(app)` adds the
    /v1/replication routes, which take `replication_tokens` (and no other token)."""
    if not tokens:
        # An empty token set would lock everyone out silently; say so once at start-up.
        log.warning("no API tokens configured: every /v1 request will be refused")
    app = web.Application(middlewares=[_errors, _auth])
    app[SERVICE_KEY] = service
    app[TOKENS_KEY] = Tokens.of(tokens)
    app[REPL_TOKENS_KEY] = frozenset(replication_tokens)
    app[METRICS_KEY] = metrics
    app[REFUSALS_KEY] = Refusals()
    for path, handler in _GETS.items():
        app.router.add_get(path, handler)
    for path, handler in _POSTS.items():
        app.router.add_post(path, handler)
    if replication is not None:
        replication(app)
    app.on_response_prepare.append(_role_header)
    return app


def make_ssl_context(tls: Mapping[str, Any] | Any | None) -> ssl.SSLContext | None:
    """A server TLS context from `tls = {cert, key}` (a mapping or an object), or None for HTTP.

    The `ca` entry is for clients that verify us; the API does not ask clients for certificates
    (they authenticate with bearer tokens).
    """
    if not tls:
        return None
    cert = tls.get("cert") if isinstance(tls, Mapping) else getattr(tls, "cert", None)
    key = tls.get("key") if isinstance(tls, Mapping) else getattr(tls, "key", None)
    if not cert or not key:
        raise ValueError("tls: both 'cert' and 'key' are required")
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(str(cert), str(key))
    return ctx
