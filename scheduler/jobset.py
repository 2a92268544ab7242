"""The jobs in force: job files read with their last good version kept, and when this daemon
first saw each job definition."""

from __future__ import annotations

import logging
from typing import Any

from scheduler.calendars import load_calendars
from scheduler.config import SchedulerConfig
from scheduler.jobfiles import load_jobs_dir
from scheduler.jobs import job_to_dict
from scheduler.ledger import Change, Ledger, utc_iso
from scheduler.tomlsrc import SourceError

log = logging.getLogger("hasched.scheduler")


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
