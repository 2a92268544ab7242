"""The scheduler process: its life cycle, the planning and collecting loops, reload; the Service
that the REST API and the control socket talk to. Becoming active or standby is in roles.py,
moving a run on in progress.py, the job files in jobset.py."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import ssl
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from scheduler import __version__, backlog, preview
from scheduler import planner as planning
from scheduler.config import (
    ConfigError,
    SchedulerConfig,
    read_token,
    read_tokens,
)
from scheduler.control import ControlServer
from scheduler.dispatch import Dispatcher
from scheduler.jobset import JobSet
from scheduler.ledger import (
    FINAL_STATES,
    BatchWriter,
    Change,
    Ledger,
    nominal_iso,
    parse_time,
)
from scheduler.progress import RunProgress
from scheduler.protocol import AgentClient
from scheduler.roles import Roles
from scheduler.service import Conflict, NotActive, NotFound

log = logging.getLogger("hasched.scheduler")
RECALL_MARGIN = 0.25  # seconds: a run sent ahead and due sooner may be starting already

COLLECT_EVERY = 1.0
LISTING_CHUNK = 1000  # jobs per piece of GET /v1/jobs: some 10 ms of work between two yields
# Fires are planned this many seconds early: those that can be sent ahead reach their agent
# before their time and start there at it (progress.RunProgress); the others wait for it.
DISPATCH_LEAD = 1.0


def _why(e: BaseException) -> str:
    return getattr(e, "strerror", None) or " ".join(str(e).split()) or type(e).__name__


def _now() -> datetime:
    return datetime.now(UTC)


class Scheduler(Roles, RunProgress):
    """Implements scheduler.service.Service."""

    def __init__(self, config: SchedulerConfig, role: str = "active", metrics: Any = None) -> None:
        self.config = config
        self.wanted_role = role
        self.role = "standby"
        self.metrics = metrics
        # Tokens first: a bad token file is a start-up error (exit 2) before anything is read
        # or written.
        agents = config.agents or {}
        self.clients: dict[str, AgentClient] = {
            n: AgentClient(n, a.url, read_token(a.token_file), str(a.ca) if a.ca else None)
            for n, a in agents.items()}
        self.api_tokens = (read_tokens(config.api_tokens_file) if config.api_tokens_file
                           else frozenset())
        self.ledger = Ledger(Path(config.state_dir) / "ledger.sqlite")
        self.writer = BatchWriter(self.ledger)
        self.jobset = JobSet(config)
        self.jobset.load(strict=True)
        self.jobset.note_definitions(self.ledger, {})
        self.dispatcher: Dispatcher | None = None
        self.control = ControlServer(self, Path(config.run_dir))
        self._tasks: list[asyncio.Task[None]] = []
        self._probe_task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._advancing: set[tuple[str, int]] = set()
        self._held: set[tuple[str, int]] = set()  # planned early, waiting for their time
        self.dispatch_lead = getattr(config, "dispatch_lead", DISPATCH_LEAD)
        self.overload_after = getattr(config, "overload_after", backlog.OVERLOAD_AFTER)
        # Agents that did not answer when this term began, and when it began: a run missed
        # before then may have been sent to one of them by the predecessor.
        self._unadopted: set[str] = set()
        self._activated_at: datetime | None = None
        self._spawned: set[asyncio.Task[None]] = set()
        self._role_lock = asyncio.Lock()
        self.plan: Any = None
        self._api_runner: Any = None

    @property
    def jobs(self) -> dict[str, Any]:
        return self.jobset.jobs

    # -- life cycle --------------------------------------------------------------
    async def start(self) -> None:
        """Connect to agents, listen (control socket, REST API); then take the role."""
        agents = self.config.agents or {}
        self.dispatcher = Dispatcher(
            self.ledger, self.writer, self.clients, {n: list(a.labels) for n, a in agents.items()},
            Path(self.config.state_dir), self.metrics, self.ledger.epoch, self._superseded,
            self._on_final)
        if self.metrics is not None:
            self.metrics.set_epoch(self.ledger.epoch())
            self.metrics.set_role("standby")
            if hasattr(self.metrics, "set_agents_total"):
                self.metrics.set_agents_total(len(self.clients))
        await self.control.start()
        await self._start_api()
        self._spawn(self.jobset.warm())
        self._probe_task = asyncio.create_task(self._probe_loop())
        if self.wanted_role == "active":
            try:
                await self._activate()
            except RuntimeError as e:
                log.error("cannot become active: %s; running as standby", e)

    async def stop(self) -> None:
        await self._deactivate()
        if self._probe_task:
            self._probe_task.cancel()
        await self.control.stop()
        if self._api_runner is not None:
            await self._api_runner.cleanup()
        for c in self.clients.values():
            await c.close()
        self.ledger.close()

    async def _start_api(self) -> None:
        try:
            from aiohttp import web

            from scheduler.api import http_logger, make_app, make_ssl_context
        except ImportError as e:  # the REST API is optional for the core to run
            log.warning("REST API not available: %s", e)
            return
        cfg = self.config
        try:
            ssl_context = make_ssl_context(cfg.tls)
        except (OSError, ssl.SSLError, ValueError) as e:
            raise ConfigError(cfg.path, None, "scheduler.tls",
                              f"cannot load the certificate or key: {_why(e)}") from None
        app = make_app(self, self.api_tokens, self.metrics)
        self._api_runner = web.AppRunner(app, access_log=None, logger=http_logger())
        await self._api_runner.setup()
        site = web.TCPSite(self._api_runner, cfg.listen_host, cfg.listen_port,
                           ssl_context=ssl_context)
        try:
            await site.start()
        except OSError as e:  # "Name or service not known" alone named no setting
            raise ConfigError(cfg.path, None, "scheduler.listen", f"cannot listen on "
                              f"{cfg.listen_host}:{cfg.listen_port}: {_why(e)}") from None
        log.info("REST API listening on %s:%s", self.config.listen_host, self.config.listen_port)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._spawned.add(task)
        task.add_done_callback(self._spawned.discard)

    # -- planning ----------------------------------------------------------------------

    async def _plan_loop(self) -> None:
        while True:
            nxt = self.plan.next_time()
            lead = timedelta(seconds=self.dispatch_lead)
            delay = 3600.0 if nxt is None else (nxt - lead - _now()).total_seconds()
            if delay > 0:
                self._wake.clear()
                try:
                    await asyncio.wait_for(self._wake.wait(), delay)
                except TimeoutError:
                    pass
            if self.role != "active":
                return
            await self._fire([(self.jobs[n], t) for n, t in self.plan.due(_now() + lead)
                              if n in self.jobs])

    async def _fire(self, fires: list[tuple[Any, datetime]]) -> None:
        """Record due fires (one transaction), then send each on its way."""
        if not fires:
            return
        paused = {n for n, s in self.ledger.job_states().items() if s["paused"]}
        changes, rows = [], []
        for job, t in fires:
            nominal = nominal_iso(t)
            changes.append(Change("job", job=job.name, fields={"last_planned": nominal}))
            if job.name in paused:
                continue
            rid = planning.run_id(job.name, t)
            agent = self.dispatcher.pick_agent(job) if not job.after else None
            changes.append(Change("create", rid, 1, job.name,
                                  {"nominal": nominal, "agent": agent}))
            rows.append((rid, 1))
        await self.writer.write(changes)
        for key in rows:
            row = self.ledger.get_attempt(*key)
            if row and row["state"] == "scheduled":
                self._spawn(self._advance(row))

    async def _collect_loop(self) -> None:
        assert self.dispatcher is not None
        while self.role == "active":
            try:
                await self.dispatcher.collect()
                reach = self.dispatcher.reachable
                for agent in [a for a in self._unadopted if reach.get(a)]:
                    if await self.dispatcher.adopt_agent(agent, _now()):
                        self._unadopted.discard(agent)
                # Scheduled runs move on together; a run bound to an agent that is down waits
                # for the next pass that finds it up (no timeout per run per pass).
                pending = [r for r in self.ledger.open_runs() if r["state"] == "scheduled"
                           and (not r["agent"] or reach.get(r["agent"], False))]
                if self.role == "active":
                    await asyncio.gather(*(self._advance(r) for r in pending))
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("collect pass failed; retrying")
            await asyncio.sleep(COLLECT_EVERY)

    # -- reload --------------------------------------------------------------------------
    async def reload(self) -> dict[str, Any]:
        """All job files, or nothing: with any error the jobs in force stay as they were."""
        before = self.jobs
        errors = self.jobset.load()
        if not errors:
            self._spawn(self.jobset.warm())
            self.jobset.note_definitions(self.ledger, before)
            if self.role == "active" and self.plan is not None:
                self.plan.replace_jobs(self.jobs, _now())
                self._wake.set()
        return {"jobs": len(self.jobs), "errors": errors, "changed": not errors}

    def set_log_level(self, level: str) -> None:
        logging.getLogger("hasched").setLevel(level.upper())
        log.info("log level set to %s", level)

    # -- Service: identity and health ------------------------------------------------------
    def _store_state(self) -> str:
        try:
            self.ledger.epoch()
            return "ok"
        except Exception as e:
            return f"error: {e}"

    def health(self) -> dict[str, Any]:
        state = self._store_state()
        behind = self.behind_seconds() if state == "ok" else 0.0
        return {"role": self._public_role(),
                "epoch": self.ledger.epoch() if state == "ok" else None,
                "version": __version__, "state_store": state, "jobs": len(self.jobs),
                "behind_seconds": round(behind, 3),
                "overloaded": backlog.overloaded(behind, self.overload_after)}

    def behind_seconds(self) -> float:
        """How far behind its fires this scheduler is (scheduler/backlog.py); 0 on a standby."""
        if self.role != "active" or self.plan is None:
            return 0.0
        return backlog.behind_seconds(_now(), self.plan.next_time(), self.ledger.open_runs(),
                                      self.jobs, parse_time)

    def _public_role(self) -> str:
        return "active" if self.role == "active" else "standby"

    def status(self) -> dict[str, Any]:
        reach = self.dispatcher.reachable_count() if self.dispatcher else 0
        return {"role": self._public_role(), "epoch": self.ledger.epoch(), "pid": os.getpid(),
                "version": __version__, "jobs": len(self.jobs), "agents": len(self.clients),
                "agents_reachable": reach, "definitions": self.jobset.definitions()}

    def check(self) -> dict[str, Any]:
        return {"state_store": self.ledger.check(), "jobs": len(self.jobs),
                "job_errors": list(self.jobset.errors)}

    # -- Service: jobs ------------------------------------------------------------------------
    def _job_view(self, name: str) -> dict[str, Any]:
        job = self.jobs.get(name)
        if job is None:
            raise NotFound(f"no job {name!r}")
        return self._view(job, bool(self.ledger.job_state(name).get("paused")), _now())

    def _view(self, job: Any, paused: bool, now: datetime) -> dict[str, Any]:
        view = self.jobset.to_dict(job)
        view["paused"] = paused
        nxt = None
        if not paused:
            plan = self.plan if self.role == "active" else None
            nxt = plan.next_fire(job.name) if plan is not None else job.trigger.next_after(now)
        view["next_fire"] = nominal_iso(nxt) if nxt else None
        return view

    def job_listing(self) -> Iterator[str]:
        """GET /v1/jobs's JSON text, in pieces of LISTING_CHUNK jobs, in O(jobs).

        The job-state table is read once (it was read once per job), each job's definition is
        encoded once per load (JobSet.encoded), and only `paused` and `next_fire` are added per
        request. The API yields to the event loop between pieces: /health and the rest go on
        while 100k jobs are listed. `self.jobs` is taken once (a reload replaces the dict,
        never changes it), so a listing is of one generation of definitions."""
        jobs, paused, now = self.jobs, self.ledger.paused_jobs(), _now()
        plan = self.plan if self.role == "active" else None
        shown: dict[datetime | None, str] = {None: "null"}  # many jobs share a next fire
        names = sorted(jobs)
        yield '{"jobs": ['
        for start in range(0, len(names), LISTING_CHUNK):
            parts = []
            for name in names[start:start + LISTING_CHUNK]:
                job = jobs[name]
                nxt = None
                if name not in paused:
                    nxt = (plan.next_fire(name) if plan is not None
                           else job.trigger.next_after(now))
                text = shown.get(nxt)
                if text is None:
                    text = shown[nxt] = f'"{nominal_iso(nxt)}"'
                parts.append(f'{self.jobset.encoded(job)[:-1]}, "paused": '
                             f'{"true" if name in paused else "false"}, "next_fire": {text}}}')
            yield (", " if start else "") + ", ".join(parts)
        yield f'], "definitions": {json.dumps(self.jobset.definitions())}}}'

    def definitions(self) -> dict[str, Any]:
        return self.jobset.definitions()

    def get_job(self, name: str) -> dict[str, Any]:
        return self._job_view(name)

    def _paused(self) -> set[str]:
        return {n for n, s in self.ledger.job_states().items() if s["paused"]}

    def next_fires(self, name: str, count: int, start: datetime) -> dict[str, Any]:
        job = self.jobs.get(name)
        if job is None:
            raise NotFound(f"no job {name!r}")
        return preview.next_view(job, start, count, paused=name in self._paused())

    async def forecast(self, start: datetime, end: datetime, limit: int) -> dict[str, Any]:
        # Every job's next fires (100k jobs: about a second) are worked out in a thread, so the
        # planning loop keeps its turns; the ledger is read here, in the loop's thread.
        return await asyncio.to_thread(preview.forecast_view, dict(self.jobs), start, end, limit,
                                       self._paused())

    async def run_now(self, name: str) -> dict[str, Any]:
        job = self.jobs.get(name)
        if job is None:
            raise NotFound(f"no job {name!r}")
        if self.role != "active":
            raise NotActive("this scheduler is standby")
        unfinished = self.ledger.open_runs(name) if job.concurrency == "forbid" else []
        if unfinished:
            r = unfinished[-1]
            raise Conflict(f"job {name!r} has an unfinished run {r['run_id']} ({r['state']}) "
                           "and concurrency=forbid: no manual run started")
        t = _now().replace(microsecond=0)
        rid = planning.manual_run_id(name, t)
        await self.writer.write([Change("create", rid, 1, name, {
            "nominal": nominal_iso(t), "manual": 1, "agent": self.dispatcher.pick_agent(job)})])
        row = self.ledger.get_run(rid)
        if row and row["state"] == "scheduled":
            self._spawn(self._advance(row))
        return self._run_view(row)

    async def _set_paused(self, name: str, paused: bool) -> dict[str, Any]:
        if name not in self.jobs:
            raise NotFound(f"no job {name!r}")
        await self.writer.write([Change("job", job=name, fields={"paused": paused})])
        log.info("job %s %s", name, "paused" if paused else "resumed")
        if paused:
            await self._recall_sent_ahead(name)
        return self._job_view(name)

    async def _recall_sent_ahead(self, name: str) -> None:
        """Planned fires already sent ahead (`dispatch_lead`) and not yet due are cancelled at
        their agent, which ends them with nothing started. One due within RECALL_MARGIN may be
        starting already: it is left alone rather than killed as it starts."""
        if self.role != "active" or self.dispatcher is None:
            return
        horizon = datetime.now(UTC) + timedelta(seconds=RECALL_MARGIN)
        for row in self.ledger.in_flight(name):
            # Sent, or taken by the agent (running, started_at still empty) to start later.
            if (not row["started_at"] and not row["manual"] and row["attempt"] == 1
                    and parse_time(row["nominal"]) > horizon):
                log.info("job %s paused: recalling %s, sent ahead", name, row["run_id"])
                await self.dispatcher.cancel(row)

    async def pause(self, name: str) -> dict[str, Any]:
        return await self._set_paused(name, True)

    async def resume(self, name: str) -> dict[str, Any]:
        return await self._set_paused(name, False)

    # -- Service: runs ----------------------------------------------------------------------
    @staticmethod
    def _run_view(row: dict[str, Any] | None) -> dict[str, Any]:
        if row is None:
            raise NotFound("no such run")
        view = dict(row)
        view["manual"] = bool(view["manual"])
        return view

    def list_runs(self, job: str | None = None, state: str | None = None,
                  since: str | None = None, until: str | None = None,
                  limit: int = 100) -> list[dict[str, Any]]:
        return [self._run_view(r) for r in self.ledger.list_runs(job, state, since, until, limit)]

    def get_run(self, run_id: str) -> dict[str, Any]:
        return self._run_view(self.ledger.get_run(run_id))

    async def run_output(self, run_id: str, stream: str = "stdout") -> str:
        row = self._run_view(self.ledger.get_run(run_id))
        if row["output_path"]:
            path = Path(f"{row['output_path']}.{stream}")
            if path.exists():
                return await asyncio.to_thread(path.read_text, errors="replace")
            if row["state"] in FINAL_STATES:
                return ""  # collected: a stream with no output is not written
        if row["state"] in ("dispatched", "running") and row["agent"] in self.clients:
            try:  # a read, allowed to a standby too
                return await self.clients[row["agent"]].output(row["run_id"], row["attempt"],
                                                               stream)
            except Exception as e:
                raise NotFound(f"output of {run_id} not available: {e}") from e
        raise NotFound(f"no output recorded for {run_id}")
