"""Loading job files and directories of them: the cross-file checks and keep-last-good.

A file with any error yields no jobs, so the daemon keeps that file's last good definitions.
Owns what one table cannot tell alone: calendars shared between files, duplicate job names,
unknown dependencies and cycles, and keeping memory and time bounded at 100k jobs.
"""

from __future__ import annotations

import gc
from collections.abc import Collection, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from scheduler.calendars import Calendar, CalendarDef, parse_calendar, resolve_calendars
from scheduler.jobs import Job
from scheduler.jobtable import JobError, JobTableReader
from scheduler.tomlsrc import SourceMap, read_toml


@dataclass
class _Parsed:
    """One job file: its raw tables until built, then only what cross-file checks need."""

    path: Path
    lines: SourceMap | None = None
    tables: dict[str, Any] = field(default_factory=dict)
    after: dict[str, list[str]] = field(default_factory=dict)  # every job table's dependencies
    calendars: dict[str, Calendar] = field(default_factory=dict)
    pending: dict[str, CalendarDef] = field(default_factory=dict)  # includes not resolved yet
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
        spec, problems = parse_calendar(name, table)
        for key, message in problems:
            where = ("calendars", name) + key
            parsed.errors.append(JobError(path, lines.line(*where), ".".join(where), message))
        if spec is not None:
            parsed.pending[name] = spec
    return parsed


def _build(parsed: _Parsed, agents, pools, calendars: Mapping[str, Calendar]) -> None:
    if parsed.lines is None:
        return
    reader = JobTableReader(parsed.path, parsed.lines, agents, pools, calendars)
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
    for name, cycle in _cycles(after):
        report(name, f"dependency cycle: {' -> '.join(cycle)}")


def _cycles(after: dict[str, list[str]]) -> list[tuple[str, list[str]]]:
    """(the job whose `after` closes it, the cycle) for each dependency cycle found."""
    found = []
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
                found.append((path[-1], path[path.index(dep):] + [dep]))
            elif dep in after and dep not in state:
                state[dep] = 1
                path.append(dep)
                stack.append(iter(after[dep]))
    return found


def _add_calendars(calendars: dict[str, Calendar], parsed: _Parsed) -> None:
    """Resolve what this file's calendars include from those known so far; a calendar that
    includes one not known yet stays pending (a later file may define it)."""
    built, _ = resolve_calendars(parsed.pending, calendars, final=False)
    for name, calendar in built.items():
        del parsed.pending[name]
        _add_calendar(calendars, parsed, calendar)


def _add_calendar(calendars: dict[str, Calendar], parsed: _Parsed, calendar: Calendar) -> None:
    name = calendar.name
    parsed.calendars[name] = calendar
    if name in calendars and calendars[name] != calendar:
        parsed.errors.append(JobError(
            parsed.path, parsed.lines.line("calendars", name), f"calendars.{name}",
            "calendar already defined differently elsewhere"))
    calendars.setdefault(name, calendar)


def _resolve_pending(calendars: dict[str, Calendar], files: list[_Parsed]) -> None:
    """The calendars still pending once every file is read, together (an include may point to
    any file); what cannot be resolved is an error at its `include`."""
    owner = {name: parsed for parsed in files for name in parsed.pending}
    defs = {name: parsed.pending[name] for name, parsed in owner.items()}
    if not defs:
        return
    built, problems = resolve_calendars(defs, calendars)
    for name, calendar in built.items():
        _add_calendar(calendars, owner[name], calendar)
    for name, message in problems.items():
        parsed = owner[name]
        where = ("calendars", name, "include")
        parsed.errors.append(JobError(parsed.path, parsed.lines.line(*where), ".".join(where),
                                      message))
    for parsed in files:
        parsed.pending.clear()


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
    _resolve_pending(all_calendars, [parsed])
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
    _resolve_pending(all_calendars, files)
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

