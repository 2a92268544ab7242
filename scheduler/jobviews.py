"""What the API shows of the jobs in force: one job's view and GET /v1/jobs's listing, each a
job's definition with `paused` and `next_fire` added (the active's plan, or on a standby the
trigger's next time after now)."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from datetime import datetime
from typing import Any

from scheduler.jobs import Job
from scheduler.jobset import JobSet
from scheduler.planner import FirePlan
from scheduler.times import nominal_iso

LISTING_CHUNK = 1000  # jobs per piece of GET /v1/jobs: some 10 ms of work between two yields


def next_fire(name: str, job: Job, plan: FirePlan | None, now: datetime) -> datetime | None:
    """The active's planned next fire of job `name`; with no plan (a standby), its trigger's."""
    return plan.next_fire(name) if plan is not None else job.trigger.next_after(now)


def job_view(jobset: JobSet, job: Job, paused: bool, plan: FirePlan | None,
             now: datetime) -> dict[str, Any]:
    view = jobset.to_dict(job)
    view["paused"] = paused
    nxt = None if paused else next_fire(job.name, job, plan, now)
    view["next_fire"] = nominal_iso(nxt) if nxt else None
    return view


def job_listing(jobset: JobSet, jobs: Mapping[str, Job], paused: set[str],
                plan: FirePlan | None, now: datetime) -> Iterator[str]:
    """GET /v1/jobs's JSON text, in pieces of LISTING_CHUNK jobs, in O(jobs).

    The job-state table is read once by the caller (it was read once per job), each job's
    definition is encoded once per load (JobSet.encoded), and only `paused` and `next_fire` are
    added per request. The API yields to the event loop between pieces: /health and the rest go
    on while 100k jobs are listed. `jobs` is one generation of definitions (a reload replaces
    the dict, never changes it)."""
    shown: dict[datetime | None, str] = {None: "null"}  # many jobs share a next fire
    names = sorted(jobs)
    yield '{"jobs": ['
    for start in range(0, len(names), LISTING_CHUNK):
        parts = []
        for name in names[start:start + LISTING_CHUNK]:
            job = jobs[name]
            nxt = None if name in paused else next_fire(name, job, plan, now)
            text = shown.get(nxt)
            if text is None:
                text = shown[nxt] = f'"{nominal_iso(nxt)}"'
            parts.append(f'{jobset.encoded(job)[:-1]}, "paused": '
                         f'{"true" if name in paused else "false"}, "next_fire": {text}}}')
        yield (", " if start else "") + ", ".join(parts)
    yield f'], "definitions": {json.dumps(jobset.definitions())}}}'
