"""The Job model and the job files that define jobs (``[job.NAME]`` tables, see docs)."""

from __future__ import annotations

import gc
import re
import sys
from collections.abc import Collection, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from types import MappingProxyType
from typing import Any

from scheduler.calendars import Calendar, parse_calendar
from scheduler.tomlsrc import SourceError, SourceMap, read_toml
from scheduler.triggers import CronTrigger, IntervalTrigger, OnceTrigger, Trigger, make_trigger
from scheduler.units import parse_duration

JOB_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
FIELDS = ("command", "schedule", "every", "at", "timezone", "agent", "pool", "timeout",
          "retries", "concurrency", "misfire", "after", "calendar", "env", "cwd", "user",
          "description")
_FIELD_SET = frozenset(FIELDS)
CONCURRENCY = ("forbid", "allow", "replace")
MISFIRE_POLICIES = ("run-once", "run-all", "skip")
_NO_ENV: Mapping[str, str] = MappingProxyType({})
_cached_duration = lru_cache(maxsize=4096)(parse_duration)  # job files repeat a few values
_COMMAND_HINT = 'e.g. command = ["/usr/local/bin/backup", "--full"]'


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
    env: Mapping[str, str] = field(default_factory=lambda: _NO_ENV)
    cwd: str | None = None
    user: str | None = None
    description: str = ""
    source: str = ""  # "file:line" of the [job.NAME] header

    def __hash__(self) -> int:  # env is a read-only mapping, which has no hash of its own
        return hash((self.name, self.command, self.trigger))


class JobError(SourceError):
    """One mistake in a job file: str() is ``file:line: field: message``."""


class _FileReader:
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
        retries = self.retries(name, table.get("retries"))
        concurrency = self.choice(name, table, ("concurrency",), CONCURRENCY, "forbid")
        misfire = self.misfire(name, table.get("misfire"))
        after = self.after(name, table.get("after", []))
        env = self.env(name, table.get("env", {}))
        cwd = self.string(name, table, "cwd")
        user = self.string(name, table, "user")
        description = self.string(name, table, "description", allow_empty=True) or ""
        if len(self.errors) > before:
            return None
        intern = sys.intern
        return Job(name=name, command=command, trigger=trigger, timezone=intern(timezone),
                   agent=agent and intern(agent), pool=pool and intern(pool), timeout=timeout,
                   retries=retries, concurrency=concurrency,
                   misfire=misfire, after=after, calendar=calendar_name, env=env, cwd=cwd,
                   user=user, description=description,
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
        try:
            return make_trigger(schedule=table.get("schedule"), every=table.get("every"),
                                at=table.get("at"), timezone=timezone, calendar=calendar)
        except ValueError as exc:
            if "time zone" in str(exc):
                key = "timezone"
            else:  # point at the last of several kinds given: that is the extra one
                key = max(given, key=lambda k: self.lines.line("job", name, k) or 0)
            self.error(name, (key,), str(exc))
        except TypeError:  # an unhashable value (list, table) where a string was expected
            self.error(name, (given[-1],), "must be a string")
        return None

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
        if isinstance(count, bool) or not isinstance(count, int) or count < 0:
            self.error(name, ("retries", "count"), f"must be an integer >= 0, got {count!r}")
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

    def env(self, name: str, value: Any) -> Mapping[str, str]:
        if not isinstance(value, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
            self.error(name, ("env",), 'must be a table of strings, e.g. env = { LANG = "C" }')
            return _NO_ENV
        return MappingProxyType(dict(value)) if value else _NO_ENV


# Value objects many jobs share are made once: it matters at 100k jobs.
_retries = lru_cache(maxsize=1024)(Retries)
_misfire = lru_cache(maxsize=1024)(Misfire)


@dataclass
class _Parsed:
    """One job file: its raw tables until built, then only what cross-file checks need."""

    path: Path
    lines: SourceMap | None = None
    tables: dict[str, Any] = field(default_factory=dict)
    after: dict[str, list[str]] = field(default_factory=dict)  # every job table's dependencies
    calendars: dict[str, Calendar] = field(default_factory=dict)
    jobs: list[Job] = field(default_factory=list)
    errors: list[JobError] = field(default_factory=list)


def _first_pass(path: Path) -> _Parsed:
    parsed = _Parsed(path)
    try:
        data, parsed.lines = read_toml(path, JobError)
    except JobError as exc:
        parsed.errors.append(exc)
        return parsed
    lines = parsed.lines
    for key in data:
        if key not in ("job", "calendars"):
            parsed.errors.append(JobError(path, lines.line(key), key,
                                          "unknown table; expected [job.NAME] or [calendars.NAME]"))
    for kind in ("job", "calendars"):
        if kind in data and not isinstance(data[kind], dict):
            parsed.errors.append(JobError(path, lines.line(kind), kind, "must be a table"))
            data[kind] = {}
    parsed.tables = data.get("job", {})
    for name, table in data.get("calendars", {}).items():
        calendar, problems = parse_calendar(name, table)
        for key, message in problems:
            where = ("calendars", name) + key
            parsed.errors.append(JobError(path, lines.line(*where), ".".join(where), message))
        if calendar is not None:
            parsed.calendars[name] = calendar
    return parsed


def _build(parsed: _Parsed, agents, pools, calendars: Mapping[str, Calendar]) -> None:
    if parsed.lines is None:
        return
    reader = _FileReader(parsed.path, parsed.lines, agents, pools, calendars)
    for name, table in parsed.tables.items():
        job = reader.job(name, table)
        if job is not None:
            parsed.jobs.append(job)
        deps = table.get("after", []) if isinstance(table, dict) else []
        parsed.after[name] = ([d for d in deps if isinstance(d, str)]
                              if isinstance(deps, list) else [])
    parsed.errors.extend(reader.errors)
    parsed.tables = {}  # the raw data of 100k jobs would double the peak memory


def _needs_later_calendar(parsed: _Parsed, calendars: Mapping[str, Calendar]) -> bool:
    return any(isinstance(t, dict) and isinstance(t.get("calendar"), str)
               and t["calendar"] not in calendars for t in parsed.tables.values())


def _check_dependencies(files: list[_Parsed], check_unknown: bool) -> None:
    """Unknown dependencies and cycles, reported at the `after` key of the job concerned."""
    owner: dict[str, _Parsed] = {}
    after: dict[str, list[str]] = {}
    for parsed in files:
        for name, deps in parsed.after.items():
            owner.setdefault(name, parsed)
            after.setdefault(name, deps)

    def report(name: str, message: str) -> None:
        parsed = owner[name]
        parsed.errors.append(JobError(parsed.path, parsed.lines.line("job", name, "after"),
                                      "after", message))

    for name, deps in after.items():
        for dep in deps:
            if check_unknown and dep not in after:
                report(name, f"unknown job {dep!r}")
    # Iterative depth-first search: white (absent) / grey (on the path) / black (done).
    state: dict[str, int] = {}
    for root in after:
        if root in state:
            continue
        path, stack = [root], [iter(after[root])]
        state[root] = 1
        while stack:
            dep = next(stack[-1], None)
            if dep is None:
                state[path.pop()] = 2
                stack.pop()
            elif dep in after and state.get(dep) == 1:
                cycle = path[path.index(dep):] + [dep]
                report(path[-1], f"dependency cycle: {' -> '.join(cycle)}")
            elif dep in after and dep not in state:
                state[dep] = 1
                path.append(dep)
                stack.append(iter(after[dep]))


def _add_calendars(calendars: dict[str, Calendar], parsed: _Parsed) -> None:
    for name, calendar in parsed.calendars.items():
        if name in calendars and calendars[name] != calendar:
            parsed.errors.append(JobError(
                parsed.path, parsed.lines.line("calendars", name), f"calendars.{name}",
                "calendar already defined differently elsewhere"))
        calendars.setdefault(name, calendar)


def load_job_file(path: str | Path, *, agents: Collection[str] | None = None,
                  pools: Collection[str] | None = None,
                  calendars: Mapping[str, Calendar] | None = None
                  ) -> tuple[list[Job], list[JobError]]:
    """Jobs of one file and every error in it; a file with any error yields no jobs.

    Dependencies (`after`) are checked for cycles within the file only: whether a dependency
    exists can only be told for the whole directory (load_jobs_dir).
    """
    parsed = _first_pass(Path(path))
    all_calendars = dict(calendars or {})
    _add_calendars(all_calendars, parsed)
    _build(parsed, agents, pools, all_calendars)
    if parsed.lines is not None:
        _check_dependencies([parsed], check_unknown=False)
    return ([] if parsed.errors else parsed.jobs), parsed.errors


@contextmanager
def _no_cyclic_gc():
    """Loading makes ~10 acyclic objects per job; the cyclic collector would rescan them all
    many times over (a third of the load time at 100k jobs) for nothing."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def load_jobs_dir(path: str | Path, *, agents: Collection[str] | None = None,
                  pools: Collection[str] | None = None,
                  calendars: Mapping[str, Calendar] | None = None
                  ) -> tuple[dict[str, Job], list[JobError]]:
    """All jobs of the ``*.toml`` files of a directory (sorted by file name), and all errors.

    A file with any error contributes NO jobs here, so one typo never half-applies a file; the
    daemon keeps that file's last good definitions until it is fixed. Duplicate job names are
    reported at the second definition. `after` may name a job of any file.
    """
    with _no_cyclic_gc():
        return _load_dir(Path(path), agents, pools, calendars)


def _load_dir(directory: Path, agents, pools, calendars) -> tuple[dict[str, Job], list[JobError]]:
    try:
        names = sorted(p for p in directory.iterdir() if p.suffix == ".toml" and p.is_file())
    except OSError as exc:
        return {}, [JobError(directory, None, "cannot read", exc.strerror or str(exc))]
    # Files are built one at a time to bound memory; one that uses a calendar defined in a
    # later file waits for the end.
    files, waiting = [], []
    all_calendars = dict(calendars or {})
    for name in names:
        parsed = _first_pass(name)
        files.append(parsed)
        _add_calendars(all_calendars, parsed)
        if _needs_later_calendar(parsed, all_calendars):
            waiting.append(parsed)
        else:
            _build(parsed, agents, pools, all_calendars)
    for parsed in waiting:
        _build(parsed, agents, pools, all_calendars)
    seen: dict[str, Path] = {}
    for parsed in files:
        for name in parsed.after:
            if name in seen:
                parsed.errors.append(JobError(
                    parsed.path, parsed.lines.header_line("job", name), f"job.{name}",
                    f"job already defined in {seen[name]}"))
            else:
                seen[name] = parsed.path
    _check_dependencies([p for p in files if p.lines is not None], check_unknown=True)
    jobs: dict[str, Job] = {}
    errors: list[JobError] = []
    for parsed in files:
        errors.extend(sorted(parsed.errors, key=lambda e: e.line or 0))
        if not parsed.errors:
            jobs.update((job.name, job) for job in parsed.jobs)
    return jobs, errors


def validate_path(path: str | Path, *, agents: Collection[str] | None = None,
                  pools: Collection[str] | None = None,
                  calendars: Mapping[str, Calendar] | None = None) -> list[JobError]:
    """Every error in a job file or a directory of job files (nothing is changed)."""
    if Path(path).is_dir():
        return load_jobs_dir(path, agents=agents, pools=pools, calendars=calendars)[1]
    errors = load_job_file(path, agents=agents, pools=pools, calendars=calendars)[1]
    return sorted(errors, key=lambda e: e.line or 0)


def job_to_dict(job: Job) -> dict[str, Any]:
    """A JSON-safe view of a job, for the API."""
    trigger = job.trigger
    schedule = every = at = None
    if isinstance(trigger, CronTrigger):
        schedule = trigger.expr
    elif isinstance(trigger, IntervalTrigger):
        every = trigger.seconds
    elif isinstance(trigger, OnceTrigger):
        at = trigger.at.isoformat(timespec="seconds")
    return {
        "name": job.name, "command": list(job.command), "schedule": schedule, "every": every,
        "at": at, "trigger": trigger.describe(), "timezone": job.timezone, "agent": job.agent,
        "pool": job.pool, "timeout": job.timeout,
        "retries": {"count": job.retries.count, "delay": job.retries.delay},
        "concurrency": job.concurrency,
        "misfire": {"policy": job.misfire.policy, "grace": job.misfire.grace},
        "after": list(job.after), "calendar": job.calendar, "env": dict(job.env),
        "cwd": job.cwd, "user": job.user, "description": job.description, "source": job.source,
    }
