"""The scheduler process: its parts wired together, its life cycle, the collecting loop, reload;
the Service that the REST API and the control socket talk to.

The parts, each with its dependencies given here: the agent pool (agents.py), the term that
owns the role and decides every HA step (term.py), dispatch / collect / adopt on top of the pool,
the run mover (progress.py), the fire planner (fires.py), the jobs in force (jobset.py), what
the API shows of them (jobviews.py) and of a run's output (runoutput.py). This module has no HA
logic of its own."""

from __future__ import annotations

import asyncio
import logging
import os
import ssl
from collections.abc import Coroutine, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

from scheduler import __version__, audit, backlog, jobviews, preview
from scheduler.adopt import Adopter
from scheduler.agents import AgentPool
from scheduler.audit import NOBODY, Actor
from scheduler.auth import Tokens, read_api_tokens
from scheduler.collect import Collector
from scheduler.config import (
    ConfigError,
    SchedulerConfig,
    read_token,
)
from scheduler.control import ControlServer
from scheduler.dispatch import Dispatcher
from scheduler.fires import DISPATCH_LEAD, FirePlanner
from scheduler.jobset import JobSet
from scheduler.ledger import BatchWriter, Ledger, parse_time
from scheduler.orders import Orders
from scheduler.planner import FirePlan
from scheduler.progress import RunMover
from scheduler.protocol import AgentClient
from scheduler.replication.handover import Handover
from scheduler.replication.node import Replication
from scheduler.retention import HISTORY, HistoryPruner
from scheduler.runoutput import read_output
from scheduler.runs import SCHEDULED, Run
from scheduler.service import NotActive, NotFound
from scheduler.term import Superseded, Term
from scheduler.times import utc_now

log = logging.getLogger("hasched.scheduler")
COLLECT_EVERY = 1.0
PROBE_EVERY = 5.0  # a standby's health probes of the agents (what /health shows of them)


def _why(e: BaseException) -> str:
    return getattr(e, "strerror", None) or " ".join(str(e).split()) or type(e).__name__


class Scheduler:
    """Implements scheduler.service.Service."""

    def __init__(self, config: SchedulerConfig, role: str = "active", metrics: Any = None) -> None:
        self.config = config
        self.wanted_role = role
        self.metrics = metrics
        # Tokens first: a bad token file is a start-up error (exit 2) before anything is read
        # or written.
        agents = config.agents or {}
        self.clients: dict[str, AgentClient] = {
            n: AgentClient(n, a.url, read_token(a.token_file), str(a.ca) if a.ca else None)
            for n, a in agents.items()}
        self.api_tokens = (read_api_tokens(config.api_tokens_file) if config.api_tokens_file
                           else Tokens([]))
        self.ledger = Ledger(Path(config.state_dir) / "ledger.sqlite")
        self.output_dir = Path(config.state_dir) / "output"
        self.replication = Replication(getattr(config, "replication", None), self.ledger,
                                       self.output_dir, lambda: self.term.public_role,
                                       lambda body: self.handover.receive(body))
        self.writer = BatchWriter(self.ledger, self.replication.waiter)
        self.handover = Handover(self.ledger, self.writer)
        repl = getattr(config, "replication", None)
        self.pruner = HistoryPruner(self.ledger, self.writer, self.output_dir,
                                    repl.history if repl is not None else HISTORY)
        self.jobset = JobSet(config)
        self.jobset.load(strict=True)
        if not self.replication.following:
            # A following standby's job_state rows are the active's: it writes its own only
            # once active (_start_work), or they would go into its log.
            self.jobset.note_definitions(self.ledger, {})
        self.control = ControlServer(self, Path(config.run_dir))
        self._tasks: list[asyncio.Task[None]] = []  # the loops of an active term
        self._spawned: set[asyncio.Task[None]] = set()  # its other tasks
        self._probe_task: asyncio.Task[None] | None = None
        self._api_runner: Any = None
        self.overload_after = getattr(config, "overload_after", backlog.OVERLOAD_AFTER)

        self.pool = AgentPool(self.clients, {n: list(a.labels) for n, a in agents.items()},
                              metrics)
        self.adopter = Adopter(self.writer, self.pool)
        self.term = Term(self.ledger, self.pool, self.adopter, self._start_work,
                         self._stop_work, metrics)
        self.term.replica = self.replication
        self.dispatcher = Dispatcher(self.writer, self.pool, self.ledger.epoch,
                                     self.term.superseded, metrics)
        self.mover = RunMover(self.ledger, self.writer, lambda: self.jobset.jobs, self.term,
                              self.dispatcher, self._spawn, metrics)
        self.collector = Collector(self.ledger, self.writer, self.pool, self.output_dir,
                                   self.ledger.epoch,
                                   self.term.tell, self.term.superseded, self.mover.on_final,
                                   metrics)
        self.fires = FirePlanner(self.ledger, self.writer, lambda: self.jobset.jobs, self.term,
                                 self.pool, self.mover, self._spawn,
                                 getattr(config, "dispatch_lead", DISPATCH_LEAD))
        self.orders = Orders(self.ledger, self.writer, lambda: self.jobset.jobs, self.pool,
                             self.mover, self._spawn, self._refuse_on_standby)

    @property
    def jobs(self) -> dict[str, Any]:
        return self.jobset.jobs

    @property
    def public_role(self) -> str:
        """What the API's X-Hasched-Role header says."""
        return self.term.public_role

    @property
    def role(self) -> str:
        """The term's role (read only: the term alone changes it)."""
        return self.term.role

    # -- life cycle --------------------------------------------------------------
    async def start(self) -> None:
        """Listen (control socket, REST API); then take the role."""
        if self.metrics is not None:
            self.metrics.set_epoch(self.ledger.epoch())
            self.metrics.set_role("standby")
            if hasattr(self.metrics, "set_agents_total"):
                self.metrics.set_agents_total(len(self.clients))
        self.replication.start()
        await self.control.start()
        await self._start_api()
        self._spawn(self.jobset.warm())
        self._probe_task = asyncio.create_task(self._probe_loop())
        if self.wanted_role == "active":
            try:
                await self.term.activate()
            except Superseded as e:
                log.error("cannot become active: %s; running as standby", e)
        if not self.term.active:
            self.replication.on_standby()

    async def stop(self) -> None:
        await self.replication.stop()
        await self.term.demote("stopping")
        if self._probe_task:
            self._probe_task.cancel()
        await self.control.stop()
        if self._api_runner is not None:
            await self._api_runner.cleanup()
        await self.pool.close()
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
        app = make_app(self, self.api_tokens, self.metrics, self.replication.routes,
                       self.replication.tokens)
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

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(coro)
        self._spawned.add(task)
        task.add_done_callback(self._spawned.discard)
        return task

    # -- the work of an active term (the term's hooks) -----------------------------------------
    async def _start_work(self, latest: dict[str, str], began_at: datetime) -> None:
        if self.replication.following:  # what the replica did not record of the jobs in force
            self.jobset.note_definitions(self.ledger, {})
        await self.fires.catch_up(latest, began_at)
        if self.replication.unmirrored:  # collected on the old active, not mirrored here yet
            keys, self.replication.unmirrored = self.replication.unmirrored, []
            self._spawn(self._recover_output(keys))
        self._tasks = [asyncio.create_task(self.fires.plan_loop()),
                       asyncio.create_task(self._collect_loop()),
                       asyncio.create_task(self.pruner.loop(lambda: self.term.active))]

    async def _recover_output(self, keys: list[tuple[str, int]]) -> None:
        log.info("output of %d run(s) recovered from their agents", await
                 self.collector.recover_output(keys))

    async def _stop_work(self) -> None:
        tasks = self._tasks + list(self._spawned) + self.collector.in_flight()
        self._tasks = []
        for t in tasks:
            t.cancel()
        for t in tasks:
            try:
                await t
            except (asyncio.CancelledError, Exception):
                pass

    async def _collect_loop(self) -> None:
        while self.term.active:
            try:
                await self.collector.collect()
                self._spawn(self.term.reconcile())  # in the background: it may list a week
                # Scheduled runs move on together; a run bound to an agent that is down waits
                # for the next pass that finds it up. The pass waits for them as for the
                # agents (an agent stopped since it last answered holds a dispatch to it).
                reach = self.pool.reachable
                pending = [r for r in self.ledger.open_runs() if r.state == SCHEDULED
                           and (not r.agent or reach.get(r.agent, False))]
                if self.term.active and pending:
                    await asyncio.wait([self._spawn(self.mover.advance(r)) for r in pending],
                                       timeout=self.collector.wait)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("collect pass failed; retrying")
            await asyncio.sleep(COLLECT_EVERY)

    async def _probe_loop(self) -> None:
        while True:
            if not self.term.active:
                await self.pool.probe()
            await asyncio.sleep(PROBE_EVERY)

    # -- Service: roles ------------------------------------------------------------------
    async def promote(self, epoch: int) -> dict[str, Any]:
        await self.term.promote(epoch)
        return {"role": self.term.public_role, "epoch": self.ledger.epoch()}

    async def demote(self) -> dict[str, Any]:
        await self.term.demote()
        return {"role": self.term.public_role, "epoch": self.ledger.epoch()}

    # -- reload --------------------------------------------------------------------------
    async def reload(self) -> dict[str, Any]:
        """All job files, or nothing: with any error the jobs in force stay as they were."""
        before = self.jobs
        errors = self.jobset.load()
        if not errors:
            self._spawn(self.jobset.warm())
            if self.term.active or not self.replication.following:
                self.jobset.note_definitions(self.ledger, before)
            self.fires.replace_jobs(self.jobs)
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
        return {"role": self.term.public_role,
                "epoch": self.ledger.epoch() if state == "ok" else None,
                "version": __version__, "state_store": state, "jobs": len(self.jobs),
                "behind_seconds": round(behind, 3),
                "overloaded": backlog.overloaded(behind, self.overload_after),
                "replication": self.replication.view(),
                # A following standby's jobs and runs are the active's, as far as replicated.
                "replica": not self.term.active and self.replication.following}

    def behind_seconds(self) -> float:
        """How far behind its fires this scheduler is (scheduler/backlog.py); 0 on a standby."""
        plan = self.fires.plan
        if not self.term.active or plan is None:
            return 0.0
        return backlog.behind_seconds(utc_now(), plan.next_time(), self.ledger.open_runs(),
                                      self.jobs, parse_time)

    def status(self) -> dict[str, Any]:
        reach = self.pool.reachable_count()
        return {"role": self.term.public_role, "epoch": self.ledger.epoch(), "pid": os.getpid(),
                "version": __version__, "jobs": len(self.jobs), "agents": len(self.clients),
                "agents_reachable": reach, "definitions": self.jobset.definitions(),
                "replication": self.replication.view()}

    def check(self) -> dict[str, Any]:
        return {"state_store": self.ledger.check(), "jobs": len(self.jobs),
                "job_errors": list(self.jobset.errors)}

    # -- Service: jobs ------------------------------------------------------------------------
    def _job_view(self, name: str) -> dict[str, Any]:
        job = self.jobs.get(name)
        if job is None:
            raise NotFound(f"no job {name!r}")
        return self._view(job, bool(self.ledger.job_state(name).get("paused")), utc_now())

    def _plan(self) -> FirePlan | None:
        return self.fires.plan if self.term.active else None

    def _view(self, job: Any, paused: bool, now: datetime) -> dict[str, Any]:
        return jobviews.job_view(self.jobset, job, paused, self._plan(), now)

    def job_listing(self) -> Iterator[str]:
        """GET /v1/jobs's JSON text in pieces (scheduler/jobviews.py). `self.jobs` is taken
        once, so a listing is of one generation of definitions."""
        return jobviews.job_listing(self.jobset, self.jobs, self.ledger.paused_jobs(),
                                    self._plan(), utc_now())

    def definitions(self) -> dict[str, Any]:
        return self.jobset.definitions()

    def get_job(self, name: str) -> dict[str, Any]:
        return self._job_view(name)

    def next_fires(self, name: str, count: int, start: datetime) -> dict[str, Any]:
        job = self.jobs.get(name)
        if job is None:
            raise NotFound(f"no job {name!r}")
        return preview.next_view(job, start, count, paused=name in self.ledger.paused_jobs())

    async def forecast(self, start: datetime, end: datetime, limit: int) -> dict[str, Any]:
        # Every job's next fires (100k jobs: about a second) are worked out in a thread, so the
        # planning loop keeps its turns; the ledger is read here, in the loop's thread.
        return await asyncio.to_thread(preview.forecast_view, dict(self.jobs), start, end, limit,
                                       self.ledger.paused_jobs())

    def _refuse_on_standby(self) -> None:
        if not self.term.active:
            raise NotActive(f"this scheduler is standby; the active is "
                            f"{self.replication.active_url()}")

    async def run_now(self, name: str, by: Actor | None = None) -> dict[str, Any]:
        return self._run_view(await self.orders.run_now(name, by or NOBODY))

    async def pause(self, name: str, by: Actor | None = None) -> dict[str, Any]:
        await self.orders.set_paused(name, True, by or NOBODY)
        return self._job_view(name)

    async def resume(self, name: str, by: Actor | None = None) -> dict[str, Any]:
        await self.orders.set_paused(name, False, by or NOBODY)
        return self._job_view(name)

    # -- Service: runs ----------------------------------------------------------------------
    @staticmethod
    def _run_view(row: Run | None) -> dict[str, Any]:
        if row is None:
            raise NotFound("no such run")
        return row.to_dict()

    def list_runs(self, job: str | None = None, state: str | None = None,
                  since: str | None = None, until: str | None = None,
                  limit: int = 100) -> list[dict[str, Any]]:
        return [self._run_view(r) for r in self.ledger.list_runs(job, state, since, until, limit)]

    def get_run(self, run_id: str) -> dict[str, Any]:
        return self._run_view(self.ledger.get_run(run_id))

    async def cancel(self, run_id: str, by: Actor | None = None) -> dict[str, Any]:
        run, outcome = await self.orders.cancel(run_id, by or NOBODY)
        return {"run": self._run_view(run), "outcome": outcome}

    def audit(self, job: str | None = None, since: str | None = None,
              limit: int = 100) -> list[dict[str, Any]]:
        return [audit.view(row) for row in self.ledger.audit(job, since, limit)]

    async def run_output(self, run_id: str, stream: str = "stdout") -> str:
        return await read_output(self.ledger.get_run(run_id), stream, self.output_dir,
                                 self.clients)
