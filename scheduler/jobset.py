"""The jobs in force: job files read with their last good version kept, and when this daemon
first saw each job definition."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from scheduler.calendars import load_calendars
from scheduler.config import SchedulerConfig
from scheduler.jobfiles import load_jobs_dir
from scheduler.jobs import job_to_dict
from scheduler.ledger import Change, Ledger, utc_iso
from scheduler.tomlsrc import SourceError

log = logging.getLogger("hasched.scheduler")


class JobSet:
    """The jobs in force.

    At start, files with errors contribute nothing and the others load (the daemon must come
    up). A reload is a transaction: the jobs directory and every file in it are read, and only
    when all of it is good do the definitions change; otherwise nothing changes and `stale`
    says since when and why, until a reload succeeds.
    """

    def __init__(self, config: SchedulerConfig) -> None:
        self.config = config
        self.jobs: dict[str, Any] = {}
        self.errors: list[str] = []
        self.failed_at: str | None = None  # when the last failed load was, None after a good one
        self._encoded: dict[str, tuple[Any, str]] = {}  # name -> (job, JSON of its definition)

    def load(self, strict: bool = False) -> list[str]:
        """Read the job files; the errors, one line each (none: the new definitions are in
        force). `strict` is the start: a bad calendars file raises (it is configuration), files
        with errors are left out. Otherwise (a reload) any error changes nothing."""
        agents = self.config.agents or {}
        pools = {label for a in agents.values() for label in a.labels}
        try:
            calendars = (load_calendars(self.config.calendars_file)
                         if self.config.calendars_file else {})
        except SourceError as e:
            if strict:
                raise
            return self._failed([str(e)])
        fresh, errs = load_jobs_dir(self.config.jobs_dir, agents=set(agents), pools=pools,
                                    calendars=calendars)
        errors = [str(e) for e in errs]
        if errors and not strict:
            return self._failed(errors)
        for e in errors:
            log.error("job file: %s", e)
        self.jobs, self.errors = fresh, errors
        self._encoded = {n: v for n, v in self._encoded.items() if fresh.get(n) is v[0]}
        self.failed_at = utc_iso() if errors else None
        log.info("%d job(s) loaded, %d error(s)", len(fresh), len(errors))
        return errors

    def _failed(self, errors: list[str]) -> list[str]:
        for e in errors:
            log.error("job file: %s", e)
        log.error("reload failed with %d error(s): the %d job(s) in force are unchanged",
                  len(errors), len(self.jobs))
        self.errors, self.failed_at = errors, utc_iso()
        return errors

    def definitions(self) -> dict[str, Any]:
        """Whether the definitions in force are those of the files: {"stale": bool, and when
        stale "failed_at" (when the last load failed) and "errors" (why)}."""
        if self.failed_at is None:
            return {"stale": False}
        return {"stale": True, "failed_at": self.failed_at, "errors": list(self.errors)}

    def note_definitions(self, ledger: Ledger, before: dict[str, Any]) -> None:
        """Record durably when this daemon first saw each job definition (a standby too): the
        catch-up of a promotion reaches back to a missed fire of a job it knew, never to a fire
        from before the job (or its schedule) existed. The schedule is recorded with it, so a
        schedule changed while the daemon was down counts from the start that saw it."""
        states = ledger.job_states()
        now = utc_iso()
        changes = []
        for name, job in self.jobs.items():
            state = states.get(name, {})
            schedule = job.trigger.describe()
            old = before.get(name)
            if (not state.get("first_seen")
                    or (old is not None and old.trigger != job.trigger)
                    or (state.get("trigger") not in (None, schedule))):
                changes.append(Change("job", job=name, fields={"first_seen": now,
                                                               "trigger": schedule}))
            elif state.get("trigger") is None:  # a ledger from before schedules were recorded
                changes.append(Change("job", job=name, fields={"trigger": schedule}))
        changes += [Change("job", job=name, fields={"first_seen": "", "trigger": ""})
                    for name, st in states.items() if st["first_seen"] and name not in self.jobs]
        ledger.apply(changes)

    @staticmethod
    def to_dict(job: Any) -> dict[str, Any]:
        return job_to_dict(job)

    async def warm(self, chunk: int = 1000) -> None:
        """Encode every job in force ahead of the first listing, yielding to the loop."""
        for i, job in enumerate(list(self.jobs.values()), start=1):
            self.encoded(job)
            if i % chunk == 0:
                await asyncio.sleep(0)

    def encoded(self, job: Any) -> str:
        """The JSON text of to_dict(job), made once per definition (a listing of 50,000 jobs
        spent most of its time making and encoding the same dicts again)."""
        cached = self._encoded.get(job.name)
        if cached is not None and cached[0] is job:
            return cached[1]
        text = json.dumps(job_to_dict(job))
        self._encoded[job.name] = (job, text)
        return text
