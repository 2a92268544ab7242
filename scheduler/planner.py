"""Scheduling policy, free of I/O: what fires when, what was missed, retries, overlap, deps.

The daemon (scheduler/daemon) drives these functions with the clock and the ledger.
"""

from __future__ import annotations

import heapq
import re
import secrets
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, date, datetime, timedelta

from scheduler.jobs import JOB_NAME, Job
from scheduler.triggers import zone
from scheduler.units import format_duration

RUN_ALL_CAP = 1000
_RUN_ID_TIME = "%Y-%m-%dT%H:%M:%SZ"
MANUAL_MARK = "~manual-"
_MANUAL_TAG = re.compile(r"~manual-[0-9a-f]{1,32}")


def run_id(job_name: str, nominal: datetime) -> str:
    """``<job>@<nominal UTC time, to the second>``: the identity of a run everywhere."""
    return f"{job_name}@{nominal.astimezone(UTC).strftime(_RUN_ID_TIME)}"


def manual_run_id(job_name: str, now: datetime) -> str:
    """``<job>@<time>~manual-<8 hex>``: a manual run's own identity. Neither a second manual
    run in the same second nor the scheduled fire of that second is the same run."""
    return f"{run_id(job_name, now)}{MANUAL_MARK}{secrets.token_hex(4)}"


def nominal_of(value: str) -> str:
    """The nominal time (as in the ledger) of a run id, scheduled or manual."""
    return value.rpartition("@")[2].partition("~")[0]


def parse_run_id(value: str) -> tuple[str, datetime]:
    """(job name, nominal UTC time) of a run id; ValueError when it is not one."""
    name, sep, rest = value.partition("@")
    stamp, mark, tag = rest.partition("~")
    try:
        if (not sep or not JOB_NAME.fullmatch(name)
                or mark and not _MANUAL_TAG.fullmatch(mark + tag)):
            raise ValueError
        return name, datetime.strptime(stamp, _RUN_ID_TIME).replace(tzinfo=UTC)
    except ValueError:
        raise ValueError(f"not a run id: {value!r} (want job@YYYY-MM-DDTHH:MM:SSZ, "
                         "with ~manual-HEX for a manual run)") from None


def missed_fires(job: Job, last_planned: datetime | None, now: datetime) -> list[datetime]:
    """Fire times in (last_planned, now] still to run after down time, per job.misfire.

    Fires older than now - grace are dropped; run-once keeps the latest of the rest, run-all
    keeps them all (the latest RUN_ALL_CAP), skip keeps none. A job never planned before
    (last_planned None) does not backfill.
    """
    if last_planned is None or job.misfire.policy == "skip":
        return []
    oldest = now - timedelta(seconds=job.misfire.grace)
    start = max(last_planned, oldest - timedelta(microseconds=1))  # a fire AT now-grace counts
    keep = 1 if job.misfire.policy == "run-once" else RUN_ALL_CAP
    return list(deque(job.trigger.fires_between(start, now), maxlen=keep))


def stale_run_verdict(job: Job, due: datetime, now: datetime, planned: bool = True,
                      newest: datetime | None = None) -> str | None:
    """Why a run that an earlier term left `scheduled` must not be sent now, or None if it may.

    It is a missed fire like any other: past the misfire grace it is dropped; a planned fire
    (not a manual run nor a retry) also follows the policy: skip drops it, run-once keeps only
    the newest missed fire of the job (`newest`, which may be one found missing now).
    """
    grace = job.misfire.grace
    if now - due > timedelta(seconds=grace):
        return f"missed: not sent within the misfire grace ({format_duration(grace)})"
    if not planned:
        return None
    if job.misfire.policy == "skip":
        return "missed while no scheduler was active (misfire policy skip)"
    if job.misfire.policy == "run-once" and newest is not None and due < newest:
        return (f"missed: coalesced into the fire of {newest.astimezone(UTC):%Y-%m-%dT%H:%M:%SZ}"
                " (misfire policy run-once)")
    return None


def concurrency_decision(job: Job, in_flight: int) -> str:
    """"dispatch", "skip" (forbid, a run is in flight) or "replace" (cancel it, then dispatch)."""
    if in_flight <= 0 or job.concurrency == "allow":
        return "dispatch"
    return "replace" if job.concurrency == "replace" else "skip"


def retry_at(job: Job, attempt: int, finished_at: datetime) -> datetime | None:
    """When to start the next attempt after `attempt` (1-based) failed; None if none is left."""
    if attempt > job.retries.count:
        return None
    return finished_at + timedelta(seconds=job.retries.delay)


def dependency_state(job: Job, nominal: datetime,
                     lookup: Callable[[str, date], str | None]) -> str:
    """"ready", "wait" or "failed" for a run of job, given its dependencies' runs that day.

    lookup(dep, local_date) tells the state of dep's run(s) whose nominal time falls on that
    date, the date being local to THIS job's time zone: "succeeded", "failed" (finally, no retry
    left), "pending" or None (no run yet).
    """
    if not job.after:
        return "ready"
    day = nominal.astimezone(zone(job.timezone)).date()
    states = [lookup(dep, day) for dep in job.after]
    if "failed" in states:
        return "failed"
    return "ready" if all(s == "succeeded" for s in states) else "wait"


class FirePlan:
    """The next fire of every job, in a heap; stale heap entries are skipped, not searched for."""

    def __init__(self) -> None:
        self._heap: list[tuple[datetime, str]] = []
        self._next: dict[str, datetime] = {}
        self._jobs: dict[str, Job] = {}

    def __len__(self) -> int:
        return len(self._next)

    def load(self, jobs: Mapping[str, Job] | Iterable[Job], after: datetime) -> None:
        """Plan every job's first fire strictly after `after`, forgetting any previous plan."""
        self._jobs = {job.name: job for job in _jobs_of(jobs)}
        self._next = {}
        for name, job in self._jobs.items():
            fire = job.trigger.next_after(after)
            if fire is not None:
                self._next[name] = fire
        self._heap = [(fire, name) for name, fire in self._next.items()]
        heapq.heapify(self._heap)

    def next_time(self) -> datetime | None:
        """When the earliest planned fire is due (None when nothing will ever fire)."""
        while self._heap and self._next.get(self._heap[0][1]) != self._heap[0][0]:
            heapq.heappop(self._heap)
        return self._heap[0][0] if self._heap else None

    def next_fire(self, name: str) -> datetime | None:
        return self._next.get(name)

    def due(self, now: datetime) -> list[tuple[str, datetime]]:
        """Every (job name, nominal fire) with fire <= now, oldest first; plans the next ones.

        A job late by several periods appears once per period; the caller applies the misfire
        policy (missed_fires) when it wants to coalesce.
        """
        fired: list[tuple[str, datetime]] = []
        while self._heap and self._heap[0][0] <= now:
            fire, name = heapq.heappop(self._heap)
            if self._next.get(name) != fire:
                continue  # stale: the job was removed or re-planned
            fired.append((name, fire))
            self._plan(name, self._jobs[name].trigger.next_after(fire))
        return fired

    def replace_jobs(self, jobs: Mapping[str, Job] | Iterable[Job], now: datetime) -> None:
        """After a reload: unchanged schedules keep their next fire, new or changed ones are
        planned from now, removed jobs are dropped."""
        new = {job.name: job for job in _jobs_of(jobs)}
        for name in self._jobs.keys() - new.keys():
            self.remove(name)
        for name, job in new.items():
            old = self._jobs.get(name)
            self._jobs[name] = job
            if old is None or old.trigger != job.trigger:
                self._plan(name, job.trigger.next_after(now))
        if len(self._heap) > 2 * len(self._next) + 64:  # drop stale entries now and then
            self._heap = [(fire, name) for name, fire in self._next.items()]
            heapq.heapify(self._heap)

    def remove(self, name: str) -> None:
        self._jobs.pop(name, None)
        self._next.pop(name, None)

    def _plan(self, name: str, fire: datetime | None) -> None:
        if fire is None:
            self._next.pop(name, None)
        else:
            self._next[name] = fire
            heapq.heappush(self._heap, (fire, name))


def _jobs_of(jobs: Mapping[str, Job] | Iterable[Job]) -> Iterable[Job]:
    return jobs.values() if isinstance(jobs, Mapping) else jobs
