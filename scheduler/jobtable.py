"""Checking one ``[job.NAME]`` table of a job file into a Job, field by field.

Owns the job file's field vocabulary and every per-field ``file:line: field: message`` error
(JobError). It sees one file at a time; what needs several files (duplicate names, unknown
dependencies, calendars defined elsewhere) is scheduler.jobfiles' concern.
"""

from __future__ import annotations

import sys
from collections.abc import Collection, Mapping
from functools import lru_cache
from pathlib import Path
from types import MappingProxyType
from typing import Any

from scheduler.calendars import Calendar
from scheduler.jobs import CONCURRENCY, JOB_NAME, MISFIRE_POLICIES, NO_ENV, Job, Misfire, Retries
from scheduler.protocol import MAX_CPU_WEIGHT, MAX_MEMORY, MAX_TIMEOUT, MIN_MEMORY
from scheduler.tomlsrc import SourceError, SourceMap
from scheduler.triggers import DstPolicy, Trigger, make_trigger
from scheduler.triggers.cron import check_business_days
from scheduler.triggers.dst import BY_RULE, policy_problem
from scheduler.units import check_int, parse_duration, parse_size

FIELDS = ("command", "schedule", "every", "at", "timezone", "agent", "pool", "timeout",
          "retries", "concurrency", "misfire", "after", "calendar", "env", "secret_env", "cwd",
          "user", "memory_max", "cpu_weight", "description", "dst", "business_day")
_FIELD_SET = frozenset(FIELDS)
MAX_RETRIES = 1000
_cached_duration = lru_cache(maxsize=4096)(parse_duration)  # job files repeat a few values
_SECRET_HINT = 'secret_env = { DB_PASSWORD = { file = "/etc/hasched/secrets/db" } }'
_COMMAND_HINT = 'e.g. command = ["/usr/local/bin/backup", "--full"]'


class JobError(SourceError):
    """One mistake in a job file: str() is ``file:line: field: message``."""


class JobTableReader:
    """Builds the jobs of one parsed file, collecting every error rather than stopping."""

    def __init__(self, path: Path, lines: SourceMap, agents: Collection[str] | None,
                 pools: Collection[str] | None, calendars: Mapping[str, Calendar]) -> None:
        self.path, self.lines = path, lines
        self.agents, self.pools, self.calendars = agents, pools, calendars
        self.errors: list[JobError] = []

    def error(self, job: str, key: tuple[str, ...], message: str) -> None:
        line = self.lines.line("job", job, *key) if key else self.lines.header_line("job", job)
        self.errors.append(JobError(self.path, line, ".".join(key) or f"job.{job}", message))

    def job(self, name: str, table: Any) -> Job | None:
        before = len(self.errors)
        if not JOB_NAME.fullmatch(name):
            self.error(name, (), "not a valid job name (letters, digits, '.', '_', '-'; "
                       "starting with a letter or digit; at most 128)")
        if not isinstance(table, dict):
            self.error(name, (), "must be a table")
            return None
        for key in [k for k in table if k not in _FIELD_SET]:
            self.error(name, (key,), f"unknown field; expected one of: {', '.join(FIELDS)}")
        command = self.command(name, table.get("command"))
        timezone = self.string(name, table, "timezone") or "UTC"
        calendar_name = self.string(name, table, "calendar")
        calendar = None
        if calendar_name is not None:
            calendar = self.calendars.get(calendar_name)
            if calendar is None:
                self.error(name, ("calendar",), f"unknown calendar {calendar_name!r}; known: "
                           f"{', '.join(sorted(self.calendars)) or 'none'}")
        trigger = self.trigger(name, table, timezone, calendar)
        agent, pool = self.placement(name, table)
        timeout = self.duration(name, table, ("timeout",), None)
        if timeout is not None and timeout <= 0:
            self.error(name, ("timeout",), "must be longer than 0s")
        elif timeout is not None and timeout > MAX_TIMEOUT:  # what an agent accepts in an order
            self.error(name, ("timeout",), f"must be at most {MAX_TIMEOUT // 86400}d (ten years)")
        retries = self.retries(name, table.get("retries"))
        concurrency = self.choice(name, table, ("concurrency",), CONCURRENCY, "forbid")
        misfire = self.misfire(name, table.get("misfire"))
        after = self.after(name, table.get("after", []))
        env = self.env(name, table.get("env", {}))
        secret_env = self.secret_env(name, table.get("secret_env", {}), env)
        cwd = self.string(name, table, "cwd")
        if cwd is not None and not cwd.startswith("/"):
            # Relative to what? The agent's own working directory is nobody's intent.
            self.error(name, ("cwd",), f"must be an absolute path, got {cwd!r}")
        user = self.string(name, table, "user")
        memory_max, cpu_weight = self.limits(name, table)
        description = self.string(name, table, "description", allow_empty=True) or ""
        if len(self.errors) > before:
            return None
        intern = sys.intern
        return Job(name=name, command=command, trigger=trigger, timezone=intern(timezone),
                   agent=agent and intern(agent), pool=pool and intern(pool), timeout=timeout,
                   retries=retries, concurrency=concurrency,
                   misfire=misfire, after=after, calendar=calendar_name, env=env,
                   secret_env=secret_env, cwd=cwd, user=user, memory_max=memory_max,
                   cpu_weight=cpu_weight, description=description,
                   source=f"{self.path}:{self.lines.header_line('job', name) or 1}")

    def command(self, name: str, value: Any) -> tuple[str, ...]:
        if value is None:
            self.error(name, (), f"missing field 'command'; {_COMMAND_HINT}")
        elif isinstance(value, str):
            self.error(name, ("command",), f"must be a list of strings, not a plain string; "
                       f"{_COMMAND_HINT}")
        elif (not isinstance(value, list) or not value
              or not all(isinstance(x, str) for x in value) or not value[0]):
            self.error(name, ("command",), f"must be a non-empty list of strings; {_COMMAND_HINT}")
        else:
            return tuple(value)
        return ()

    def string(self, name: str, table: dict, key: str, allow_empty: bool = False) -> str | None:
        value = table.get(key)
        if value is not None and (not isinstance(value, str) or (not value and not allow_empty)):
            self.error(name, (key,), "must be a non-empty string")
            return None
        return value

    def trigger(self, name: str, table: dict, timezone: str,
                calendar: Calendar | None) -> Trigger | None:
        given = [k for k in ("schedule", "every", "at") if k in table]
        if not given:
            self.error(name, (), "missing field: give exactly one of schedule, every, at")
            return None
        dst = self.dst(name, table.get("dst"))
        business_day = self.business_day(name, table.get("business_day"))
        try:  # built even after a mistake in dst or business_day, to report the schedule's too
            trigger = make_trigger(schedule=table.get("schedule"), every=table.get("every"),
                                   at=table.get("at"), timezone=timezone, calendar=calendar,
                                   dst=dst or BY_RULE, business_day=business_day or ())
            return trigger if dst is not None and business_day is not None else None
        except ValueError as exc:
            if "time zone" in str(exc):
                key = "timezone"
            elif str(exc).startswith(("dst ", "business_day ")):  # given with the wrong kind
                key, _, message = str(exc).partition(" ")
                self.error(name, (key,), message)
                return None
            else:  # point at the last of several kinds given: that is the extra one
                key = max(given, key=lambda k: self.lines.line("job", name, k) or 0)
            self.error(name, (key,), str(exc))
        except TypeError:  # an unhashable value (list, table) where a string was expected
            self.error(name, (given[-1],), "must be a string")
        return None

    def dst(self, name: str, value: Any) -> DstPolicy | None:
        """`dst = { gap = "after"|"skip", repeat = "first"|"second"|"both" }`; None if wrong."""
        if value is None:
            return BY_RULE
        before = len(self.errors)
        table = self.subtable(name, "dst", value, ("gap", "repeat"))
        for key in ("gap", "repeat"):
            problem = policy_problem(key, table.get(key))
            if problem:
                self.error(name, ("dst", key), problem)
        if len(self.errors) > before:
            return None
        return DstPolicy(table.get("gap"), table.get("repeat"))

    def business_day(self, name: str, value: Any) -> tuple[int, ...] | None:
        """`business_day = 1` (first of the month), `-1` (last) or a list of them."""
        if value is None:
            return ()
        values = tuple(value) if isinstance(value, list) else (value,)
        try:
            check_business_days(values)
        except ValueError as exc:
            self.error(name, ("business_day",), str(exc).removeprefix("business_day "))
            return None
        return tuple(sorted(set(values)))

    def placement(self, name: str, table: dict) -> tuple[str | None, str | None]:
        agent, pool = self.string(name, table, "agent"), self.string(name, table, "pool")
        if "agent" in table and "pool" in table:
            self.error(name, ("pool",), "give exactly one of agent, pool (got both)")
        elif "agent" not in table and "pool" not in table:
            self.error(name, (), "missing field: give exactly one of agent, pool")
        for key, value, known in (("agent", agent, self.agents), ("pool", pool, self.pools)):
            if value is not None and known is not None and value not in known:
                self.error(name, (key,), f"unknown {key} {value!r}; known: "
                           f"{', '.join(sorted(known)) or 'none'}")
        return agent, pool

    def duration(self, name: str, table: dict, key: tuple[str, ...], default: Any) -> Any:
        if key[-1] not in table:
            return default
        try:
            return _cached_duration(table[key[-1]])
        except TypeError:  # unhashable: a list or table
            self.error(name, key, f"not a duration: {table[key[-1]]!r} (use e.g. 30s, 5m, 2h, 1d)")
            return default
        except ValueError as exc:
            self.error(name, key, str(exc))
            return default

    def choice(self, name: str, table: dict, key: tuple[str, ...], allowed: tuple[str, ...],
               default: str) -> str:
        value = table.get(key[-1], default)
        if value not in allowed:
            self.error(name, key, f"must be one of: {', '.join(allowed)}; got {value!r}")
            return default
        return value

    def subtable(self, name: str, key: str, value: Any, allowed: tuple[str, ...]) -> dict:
        if not isinstance(value, dict):
            self.error(name, (key,), f"must be a table like {{ {allowed[0]} = ... }}")
            return {}
        for sub in value:
            if sub not in allowed:
                self.error(name, (key, sub),
                           f"unknown field; expected one of: {', '.join(allowed)}")
        return value

    def retries(self, name: str, value: Any) -> Retries:
        if value is None:
            return Retries()
        table = self.subtable(name, "retries", value, ("count", "delay"))
        count = table.get("count", 0)
        try:
            check_int(count, 0, MAX_RETRIES)
        except ValueError as exc:
            self.error(name, ("retries", "count"), str(exc))
            count = 0
        return _retries(count, self.duration(name, table, ("retries", "delay"), 60.0))

    def misfire(self, name: str, value: Any) -> Misfire:
        if value is None:
            return Misfire()
        table = self.subtable(name, "misfire", value, ("policy", "grace"))
        policy = self.choice(name, table, ("misfire", "policy"), MISFIRE_POLICIES, "run-once")
        return _misfire(policy, self.duration(name, table, ("misfire", "grace"), 3600.0))

    def after(self, name: str, value: Any) -> tuple[str, ...]:
        if not isinstance(value, list) or not all(isinstance(x, str) for x in value):
            self.error(name, ("after",), 'must be a list of job names, e.g. after = ["extract"]')
            return ()
        if name in value:
            self.error(name, ("after",), "a job cannot run after itself")
        return tuple(value)

    def limits(self, name: str, table: dict) -> tuple[int | None, int | None]:
        """memory_max (a size) and cpu_weight, within what the agents accept (protocol)."""
        memory = table.get("memory_max")
        if memory is not None:
            try:
                memory = parse_size(memory)
            except ValueError as exc:
                self.error(name, ("memory_max",), str(exc))
                memory = None
            else:
                if not MIN_MEMORY <= memory <= MAX_MEMORY:
                    self.error(name, ("memory_max",), "must be between 1MiB and 1024TiB")
                    memory = None
        weight = table.get("cpu_weight")
        if weight is not None and (isinstance(weight, bool) or not isinstance(weight, int)
                                   or not 1 <= weight <= MAX_CPU_WEIGHT):
            self.error(name, ("cpu_weight",),
                       f"must be an integer from 1 to {MAX_CPU_WEIGHT} (100: the default share)")
            weight = None
        return memory, weight

    def env(self, name: str, value: Any) -> Mapping[str, str]:
        if not isinstance(value, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
            self.error(name, ("env",), 'must be a table of strings, e.g. env = { LANG = "C" }')
            return NO_ENV
        return MappingProxyType(dict(value)) if value else NO_ENV

    def secret_env(self, name: str, value: Any, env: Mapping[str, str]) -> Mapping[str, str]:
        """`secret_env = { NAME = { file = "/abs/path" } }`: the value is read from the file at
        each dispatch, so it is in no job file and the API never shows it."""
        if not isinstance(value, dict):
            self.error(name, ("secret_env",), f"must be a table, e.g. {_SECRET_HINT}")
            return NO_ENV
        files = {}
        for var, ref in value.items():
            key = ("secret_env", var)
            path = ref.get("file") if isinstance(ref, dict) and set(ref) == {"file"} else None
            if not isinstance(path, str):
                self.error(name, key, f"must be {{ file = \"/absolute/path\" }}, e.g. "
                           f"{_SECRET_HINT}")
            elif not path.startswith("/"):
                self.error(name, key, f"file must be an absolute path, got {path!r}")
            elif var in env:
                self.error(name, key, "also set in env; give it in one of env, secret_env")
            else:
                files[var] = path
        return MappingProxyType(files) if files else NO_ENV


# Value objects many jobs share are made once: it matters at 100k jobs.
_retries = lru_cache(maxsize=1024)(Retries)
_misfire = lru_cache(maxsize=1024)(Misfire)
