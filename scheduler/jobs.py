"""The Job model: what a job is once defined, and its JSON view for the API.

Kept apart from the job files (scheduler.jobtable checks one ``[job.NAME]`` table,
scheduler.jobfiles loads files and directories) because the planner and the API need only
these value objects, not the TOML parsing behind them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from scheduler.triggers import CronTrigger, IntervalTrigger, OnceTrigger, Trigger

JOB_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
CONCURRENCY = ("forbid", "allow", "replace")
MISFIRE_POLICIES = ("run-once", "run-all", "skip")
NO_ENV: Mapping[str, str] = MappingProxyType({})  # shared by every job without env
SECRET_SHOWN = "<secret>"  # what the API shows for a secret_env value


@dataclass(frozen=True, slots=True)
class Retries:
    count: int = 0
    delay: float = 60.0


@dataclass(frozen=True, slots=True)
class Misfire:
    policy: str = "run-once"  # run-once | run-all | skip
    grace: float = 3600.0


@dataclass(frozen=True, slots=True, eq=True)
class Job:
    name: str
    command: tuple[str, ...]
    trigger: Trigger
    timezone: str = "UTC"
    agent: str | None = None
    pool: str | None = None
    timeout: float | None = None
    retries: Retries = Retries()
    concurrency: str = "forbid"
    misfire: Misfire = Misfire()
    after: tuple[str, ...] = ()
    calendar: str | None = None
    env: Mapping[str, str] = field(default_factory=lambda: NO_ENV)
    # Environment variables whose values are secrets: name -> the absolute path of the file
    # holding the value, read at each dispatch (scheduler.secretenv), never shown by the API.
    secret_env: Mapping[str, str] = field(default_factory=lambda: NO_ENV)
    cwd: str | None = None
    user: str | None = None
    memory_max: int | None = None  # bytes, the run's cgroup limit (None: none)
    cpu_weight: int | None = None  # 1 to 10000, cgroup v2's cpu.weight (100: the default)
    description: str = ""
    source: str = ""  # "file:line" of the [job.NAME] header

    def __hash__(self) -> int:  # env is a read-only mapping, which has no hash of its own
        return hash((self.name, self.command, self.trigger))


def job_to_dict(job: Job) -> dict[str, Any]:
    """A JSON-safe view of a job, for the API."""
    trigger = job.trigger
    schedule = every = at = dst = None
    business_day: list[int] = []
    if isinstance(trigger, CronTrigger):
        schedule = trigger.expr
        business_day = list(trigger.business_day)
    elif isinstance(trigger, IntervalTrigger):
        every = trigger.seconds
    elif isinstance(trigger, OnceTrigger):
        at = trigger.at.isoformat(timespec="seconds")
    if isinstance(trigger, CronTrigger | OnceTrigger):  # the policy in force, defaults filled in
        dst = {"gap": trigger.policy.gap, "repeat": trigger.policy.repeat}
    return {
        "name": job.name, "command": list(job.command), "schedule": schedule, "every": every,
        "at": at, "trigger": trigger.describe(), "timezone": job.timezone, "agent": job.agent,
        "pool": job.pool, "timeout": job.timeout,
        "retries": {"count": job.retries.count, "delay": job.retries.delay},
        "concurrency": job.concurrency,
        "misfire": {"policy": job.misfire.policy, "grace": job.misfire.grace},
        "after": list(job.after), "calendar": job.calendar, "dst": dst,
        "business_day": business_day, "env": dict(job.env),
        "secret_env": dict.fromkeys(job.secret_env, SECRET_SHOWN),
        "cwd": job.cwd, "user": job.user, "memory_max": job.memory_max,
        "cpu_weight": job.cpu_weight, "description": job.description, "source": job.source,
    }
