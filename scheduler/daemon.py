"""The scheduler process: roles (active | standby), the planning loop, reload; the Service that
the REST API and the control socket talk to."""

from __future__ import annotations

import asyncio
import logging
import os
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any

from scheduler import __version__
from scheduler import planner as planning
from scheduler.calendars import load_calendars
from scheduler.config import (
    SchedulerConfig,
    read_token,
    read_tokens,
)
from scheduler.control import ControlServer
from scheduler.dispatch import Dispatcher
from scheduler.jobs import job_to_dict, load_jobs_dir
from scheduler.ledger import (
    OPEN_STATES,
    BatchWriter,
    Change,
    Ledger,
    nominal_iso,
    parse_time,
    utc_iso,
)
from scheduler.protocol import AgentClient, StaleEpoch
from scheduler.service import Conflict, NotActive, NotFound
from scheduler.tomlsrc import SourceError
from scheduler.triggers import zone

log = logging.getLogger("hasched.scheduler")

COLLECT_EVERY = 1.0
PROBE_EVERY = 5.0


def _now() -> datetime:
    return datetime.now(UTC)


def _day_bounds(job: Any, day: date | None, nominal: datetime) -> tuple[datetime, datetime]:
    """UTC bounds of a local day in the job's time zone (DST-aware); None: nominal's day."""
    tz = zone(job.timezone)
    if day is None:
        day = nominal.astimezone(tz).date()
    start = datetime.combine(day, time.min, tz)
    end = datetime.combine(day + timedelta(days=1), time.min, tz)
    return start.astimezone(UTC), end.astimezone(UTC)


def _day_end(job: Any, nominal: datetime) -> datetime:
    return _day_bounds(job, None, nominal)[1]


def _is_fire(job: Any, t: datetime) -> bool:
    nxt = job.trigger.next_after(t - timedelta(seconds=1))
    return nxt is not None and nominal_iso(nxt) == nominal_iso(t)


def _file_of_job(job: Any) -> str:
    return job.source.rpartition(":")[0] if ":" in job.source else job.source


class JobSet:
    """The jobs in force. A job file with errors contributes nothing new: its jobs from the last
    good load stay in force (a typo must not silently stop a production job)."""

    def __init__(self, config: SchedulerConfig) -> None:
        self.config = config
        self.jobs: dict[str, Any] = {}
        self.errors: list[str] = []

    def load(self, strict: bool = False) -> list[str]:
        """Re-read the job files; the errors, one line each. A bad calendars file keeps every
        job as it was (or, when `strict`, at start, raises: it is configuration)."""
        agents = self.config.agents or {}
        pools = {label for a in agents.values() for label in a.labels}
        try:
            calendars = (load_calendars(self.config.calendars_file)
                         if self.config.calendars_file else {})
        except SourceError as e:
            if strict:
                raise
            log.error("calendars: %s; jobs unchanged", e)
            self.errors = [str(e)]
            return self.errors
        fresh, errs = load_jobs_dir(self.config.jobs_dir, agents=set(agents), pools=pools,
                                    calendars=calendars)
        errors = [str(e) for e in errs]
        bad_files = {str(e.file) for e in errs}
        for name, job in self.jobs.items():
            if _file_of_job(job) in bad_files and name not in fresh:
                fresh[name] = job
        for e in errors:
            log.error("job file: %s", e)
        self.jobs, self.errors = fresh, errors
        log.info("%d job(s) loaded, %d error(s)", len(fresh), len(errors))
        return errors

    @staticmethod
    def to_dict(job: Any) -> dict[str, Any]:
        return job_to_dict(job)


class Scheduler:
    """Implements scheduler.service.Service."""

    def __init__(self, config: SchedulerConfig, role: str = "active", metrics: Any = None) -> None:
        self.config = config
        self.wanted_role = role
        self.role = "standby"
        self.metrics = metrics
        self.ledger = Ledger(Path(config.state_dir) / "ledger.sqlite")
        self.writer = BatchWriter(self.ledger)
        self.jobset = JobSet(config)
        self.jobset.load(strict=True)
        self._note_definitions({})
        # Tokens are read at construction so that a bad token file is a start-up error (exit 2).
        agents = config.agents or {}
        self.clients: dict[str, AgentClient] = {
            n: AgentClient(n, a.url, read_token(a.token_file), str(a.ca) if a.ca else None)
            for n, a in agents.items()}
        self.api_tokens = (read_tokens(config.api_tokens_file) if config.api_tokens_file
                           else frozenset())
        self.dispatcher: Dispatcher | None = None
        self.control = ControlServer(self, Path(config.run_dir))
        self._tasks: list[asyncio.Task[None]] = []
        self._probe_task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._advancing: set[tuple[str, int]] = set()
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

            from scheduler.api import make_app, make_ssl_context
        except ImportError as e:  # the REST API is optional for the core to run
            log.warning("REST API not available: %s", e)
            return
        app = make_app(self, self.api_tokens, self.metrics)
        self._api_runner = web.AppRunner(app, access_log=None)
        await self._api_runner.setup()
        site = web.TCPSite(self._api_runner, self.config.listen_host, self.config.listen_port,
                           ssl_context=make_ssl_context(self.config.tls))
        await site.start()
        log.info("REST API listening on %s:%s", self.config.listen_host, self.config.listen_port)

    # -- roles -----------------------------------------------------------------------
    def _set_role(self, role: str) -> None:
        if role != self.role:
            log.warning("role: %s -> %s (epoch %d)", self.role, role, self.ledger.epoch())
        self.role = role
        if self.metrics is not None:
            self.metrics.set_role(role)

    async def _activate(self) -> None:
        assert self.dispatcher is not None
        async with self._role_lock:
            if self.role == "active":
                return
            epoch = self.ledger.epoch()
            seen = await self.dispatcher.probe()
            if seen > epoch:
                log.error("SUPERSEDED: agents have seen epoch %d > ours %d; staying standby",
                          seen, epoch)
                raise RuntimeError(f"agents have seen epoch {seen} > {epoch}: "
                                   "another scheduler is active")
            self._set_role("active")
            now = _now()
            latest, self._unadopted = await self.dispatcher.adopt(now)
            self._activated_at = now
            await self._catch_up(latest, now)
            self._tasks = [asyncio.create_task(self._plan_loop()),
                           asyncio.create_task(self._collect_loop())]

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._spawned.add(task)
        task.add_done_callback(self._spawned.discard)

    async def _deactivate(self) -> None:
        async with self._role_lock:
            tasks, self._tasks = self._tasks + list(self._spawned), []
            for t in tasks:
                t.cancel()
            for t in tasks:
                try:
                    await t
                except (asyncio.CancelledError, Exception):
                    pass
            self._set_role("standby")

    def _superseded(self, agent: str, e: StaleEpoch) -> None:
        if self.role != "active":
            return
        log.error("SUPERSEDED: agent %s refused our epoch %d (%s); demoting to standby",
                  agent, self.ledger.epoch(), e)
        self.role = "demoting"  # stops new dispatches at once; the task below finishes the job
        asyncio.get_running_loop().create_task(self._deactivate())

    async def promote(self, epoch: int) -> dict[str, Any]:
        new = self.ledger.raise_epoch(epoch)  # durable before we act under it
        if self.metrics is not None:
            self.metrics.set_epoch(new)
        await self._activate()
        return {"role": self._public_role(), "epoch": new}

    async def demote(self) -> dict[str, Any]:
        await self._deactivate()
        return {"role": self._public_role(), "epoch": self.ledger.epoch()}

    # -- planning ----------------------------------------------------------------------
    def _note_definitions(self, before: dict[str, Any]) -> None:
        """Record durably when this daemon first saw each job definition (a standby too): the
        catch-up of a promotion reaches back to a missed fire of a job it knew, never to a fire
        from before the job (or its schedule) existed."""
        states = self.ledger.job_states()
        now = utc_iso()
        changes = []
        for name, job in self.jobs.items():
            old = before.get(name)
            if (not states.get(name, {}).get("first_seen")
                    or (old is not None and old.trigger != job.trigger)):
                changes.append(Change("job", job=name, fields={"first_seen": now}))
        changes += [Change("job", job=name, fields={"first_seen": ""})
                    for name, st in states.items() if st["first_seen"] and name not in self.jobs]
        self.ledger.apply(changes)

    async def _catch_up(self, latest: dict[str, str], now: datetime) -> None:
        """Missed fires since the latest of: each job's last planned time, the predecessor's
        last fire, when this daemon first saw the job; within the misfire grace. Then the plan
        from `now` on."""
        states = self.ledger.job_states()
        fires: list[tuple[Any, datetime]] = []
        for name, job in self.jobs.items():
            state = states.get(name, {})
            marks = [parse_time(t) for t in (state.get("last_planned"), state.get("first_seen"),
                                             latest.get(name)) if t]
            if latest.get(name) and not _is_fire(job, parse_time(latest[name])):
                marks.pop()  # a manual run's time is not a point of the schedule
            marks = [m for m in marks if m <= now]
            last = max(marks) if marks else now - timedelta(seconds=job.misfire.grace)
            fires += [(job, t) for t in planning.missed_fires(job, last, now)]
        await self._drop_stale(fires, now)
        await self._fire(fires)
        self.plan = planning.FirePlan()
        self.plan.load(self.jobs, now)

    async def _drop_stale(self, fires: list[tuple[Any, datetime]], now: datetime) -> None:
        """Runs left `scheduled` by an earlier term (this node was demoted, or stopped) are
        missed fires too: they go through the misfire policy with the fires missed now."""
        stale = [r for r in self.ledger.open_runs() if r["state"] == "scheduled"]
        paused = {n for n, s in self.ledger.job_states().items() if s["paused"]}
        newest: dict[str, datetime] = {}
        planned = [(job.name, t) for job, t in fires if job.name not in paused]
        planned += [(r["job"], parse_time(r["nominal"])) for r in stale
                    if not r["manual"] and r["attempt"] == 1]
        for name, t in planned:
            newest[name] = max(newest.get(name, t), t)
        drops = []
        for r in stale:
            job = self.jobs.get(r["job"])
            if job is None:
                continue  # _advance cancels it
            is_planned = not r["manual"] and r["attempt"] == 1
            due = parse_time(r["nominal"] if r["attempt"] == 1 else r["scheduled_at"])
            why = planning.stale_run_verdict(job, due, now, is_planned, newest.get(job.name))
            if why:
                drops.append(self._close((r["run_id"], r["attempt"]), "cancelled", why))
        await asyncio.gather(*drops)

    async def _plan_loop(self) -> None:
        while True:
            nxt = self.plan.next_time()
            delay = 3600.0 if nxt is None else (nxt - _now()).total_seconds()
            if delay > 0:
                self._wake.clear()
                try:
                    await asyncio.wait_for(self._wake.wait(), delay)
                except TimeoutError:
                    pass
            if self.role != "active":
                return
            await self._fire([(self.jobs[n], t) for n, t in self.plan.due(_now())
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

    async def _probe_loop(self) -> None:
        assert self.dispatcher is not None
        while True:
            if self.role != "active":
                await self.dispatcher.probe()
            await asyncio.sleep(PROBE_EVERY)

    async def _advance(self, row: dict[str, Any]) -> None:
        """Move a scheduled run on: wait, cancel, or dispatch (policies decided here)."""
        key = (row["run_id"], row["attempt"])
        if key in self._advancing or self.role != "active":
            return
        self._advancing.add(key)
        try:
            await self._advance_one(row)
        finally:
            self._advancing.discard(key)

    async def _advance_one(self, row: dict[str, Any]) -> None:
        assert self.dispatcher is not None
        key = (row["run_id"], row["attempt"])
        job = self.jobs.get(row["job"])
        if job is None:
            await self._close(key, "cancelled", "job is no longer defined")
            return
        if row["scheduled_at"] and parse_time(row["scheduled_at"]) > _now():
            return  # a retry waiting for its time
        nominal = parse_time(row["nominal"])
        unsure = self._unsure_members(job, row)
        if unsure:
            await self._hold(key, row, job, unsure)
            return
        if job.after and not row["manual"]:
            lookup = self._dependency_lookup(job, nominal)
            dep = planning.dependency_state(job, nominal, lookup)
            if dep == "wait":
                waiting = [d for d in job.after if lookup(d, None) != "succeeded"]
                if _now() >= _day_end(job, nominal):
                    await self._close(key, "cancelled", "dependencies did not succeed by the end "
                                      f"of the day: {', '.join(waiting)}")
                elif row["reason"] != (why := f"waiting for {', '.join(waiting)}"):
                    await self.writer.write([Change("update", *key, fields={"reason": why},
                                                    when=("scheduled",))])
                return
            if dep == "failed":
                failed = [d for d in job.after if lookup(d, None) == "failed"]
                await self._close(key, "cancelled", f"dependency failed: {', '.join(failed)}")
                return
        others = [r for r in self.ledger.in_flight(job.name) if r["run_id"] != row["run_id"]]
        decision = planning.concurrency_decision(job, len(others))
        if decision == "skip":
            await self._close(key, "cancelled", "previous run still in flight (concurrency=forbid)")
            return
        if decision == "replace":
            for other in others:
                await self.dispatcher.cancel(other)
        await self.dispatcher.dispatch(row, job)

    def _unsure_members(self, job: Any, row: dict[str, Any]) -> list[str]:
        """The pool members that did not answer when this term began, for a planned fire from
        before then: the predecessor may have sent it to one of them, and a run sent to another
        member would run twice."""
        if (job.agent or row["manual"] or row["attempt"] != 1 or not self._unadopted
                or self._activated_at is None
                or parse_time(row["nominal"]) >= self._activated_at):
            return []
        assert self.dispatcher is not None
        return sorted(a for a in self._unadopted if job.pool in self.dispatcher.labels.get(a, ()))

    async def _hold(self, key: tuple[str, int], row: dict[str, Any], job: Any,
                    unsure: list[str]) -> None:
        """Keep the run scheduled until those agents answer (then it is adopted or sent), or
        cancel it once the misfire grace has passed."""
        who = f"agent{'s' if len(unsure) > 1 else ''} {', '.join(unsure)}"
        if _now() - parse_time(row["nominal"]) > timedelta(seconds=job.misfire.grace):
            await self._close(key, "cancelled", f"{who} stayed unreachable for the misfire grace; "
                              "not sent to another agent: it may already have run there")
        elif row["reason"] != (why := f"waiting: {who} unreachable, cannot rule out that it "
                                      "already ran"):
            await self.writer.write([Change("update", *key, fields={"reason": why, "agent": None},
                                            when=("scheduled",))])

    def _dependency_lookup(self, job: Any, nominal: datetime) -> Any:
        """lookup(dep, local_date) for planner.dependency_state: the state of dep's runs on a
        day local to `job`'s time zone; date None means the day of `nominal`."""
        cache: dict[str, str | None] = {}

        def lookup(dep: str, day: date | None) -> str | None:
            if dep in cache:
                return cache[dep]
            start, end = _day_bounds(job, day, nominal)
            runs = self.ledger.runs_between(dep, nominal_iso(start), nominal_iso(end))
            if not runs:
                state = None
            elif any(r["state"] in OPEN_STATES for r in runs):
                state = "pending"
            else:
                state = "succeeded" if runs[-1]["state"] == "succeeded" else "failed"
            cache[dep] = state
            return state
        return lookup

    async def _close(self, key: tuple[str, int], state: str, reason: str) -> None:
        done = await self.writer.write([Change("update", *key, fields={
            "state": state, "reason": reason, "finished_at": utc_iso()}, when=("scheduled",))])
        if done[0]:
            log.info("run %s attempt %s %s: %s", key[0], key[1], state, reason)
            if self.metrics is not None:
                self.metrics.count_run(state)

    async def _on_final(self, row: dict[str, Any]) -> None:
        job = self.jobs.get(row["job"])
        if job is None or row["state"] not in ("failed", "timed-out", "lost"):
            return
        if row["attempt"] > job.retries.count:
            return
        finished = parse_time(row["finished_at"]) if row["finished_at"] else _now()
        at = planning.retry_at(job, row["attempt"], finished)
        if at is None:
            return
        await self.writer.write([Change("create", row["run_id"], row["attempt"] + 1, row["job"], {
            "nominal": row["nominal"], "scheduled_at": utc_iso(at), "agent": None,
            "manual": row["manual"], "reason": f"retry of attempt {row['attempt']}"})])
        log.info("run %s: attempt %d at %s", row["run_id"], row["attempt"] + 1, utc_iso(at))

    # -- reload --------------------------------------------------------------------------
    async def reload(self) -> dict[str, Any]:
        before = dict(self.jobs)
        errors = self.jobset.load()
        self._note_definitions(before)
        if self.role == "active" and self.plan is not None:
            self.plan.replace_jobs(self.jobs, _now())
            self._wake.set()
        return {"jobs": len(self.jobs), "errors": errors}

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
        return {"role": self._public_role(),
                "epoch": self.ledger.epoch() if state == "ok" else None,
                "version": __version__, "state_store": state, "jobs": len(self.jobs)}

    def _public_role(self) -> str:
        return "active" if self.role == "active" else "standby"

    def status(self) -> dict[str, Any]:
        reach = self.dispatcher.reachable_count() if self.dispatcher else 0
        return {"role": self._public_role(), "epoch": self.ledger.epoch(), "pid": os.getpid(),
                "version": __version__, "jobs": len(self.jobs), "agents": len(self.clients),
                "agents_reachable": reach}

    def check(self) -> dict[str, Any]:
        return {"state_store": self.ledger.check(), "jobs": len(self.jobs),
                "job_errors": list(self.jobset.errors)}

    # -- Service: jobs ------------------------------------------------------------------------
    def _job_view(self, name: str) -> dict[str, Any]:
        job = self.jobs.get(name)
        if job is None:
            raise NotFound(f"no job {name!r}")
        view = self.jobset.to_dict(job)
        paused = bool(self.ledger.job_states().get(name, {}).get("paused"))
        view["paused"] = paused
        nxt = None if paused else job.trigger.next_after(_now())
        view["next_fire"] = nominal_iso(nxt) if nxt else None
        return view

    def list_jobs(self) -> list[dict[str, Any]]:
        return [self._job_view(n) for n in sorted(self.jobs)]

    def get_job(self, name: str) -> dict[str, Any]:
        return self._job_view(name)

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
        rid = planning.run_id(name, t)
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
        return self._job_view(name)

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
        if row["state"] in ("dispatched", "running") and row["agent"] in self.clients:
            try:  # a read, allowed to a standby too
                return await self.clients[row["agent"]].output(row["run_id"], row["attempt"],
                                                               stream)
            except Exception as e:
                raise NotFound(f"output of {run_id} not available: {e}") from e
        raise NotFound(f"no output recorded for {run_id}")
