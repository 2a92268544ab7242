"""Named calendars: on which local dates a job may fire, and which days are business days.

A calendar allows a date when its weekday is one of `weekdays`, the date is not in `exclude`,
and every calendar it `include`s allows it too (so including "public-holidays-de" adds that
calendar's holidays). `exclude` lists dates, or dates by year:
``exclude = { 2026 = ["01-01", "12-25"], 2027 = ["01-01"] }``.
A business day is a Monday-Friday that the job's calendar allows (docs/semantics.md).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

from scheduler.config import ConfigError
from scheduler.tomlsrc import read_toml

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")  # index = date.weekday()
ALL_DAYS = frozenset(range(7))
MON_FRI = frozenset(range(5))
FIELDS = ("weekdays", "exclude", "include")
Problems = list[tuple[tuple[str, ...], str]]  # (key path below the table, message)
_DATE_HINT = 'a list of dates like "2026-12-25", or a table of years like { 2026 = ["12-25"] }'


@dataclass(frozen=True)
class Calendar:
    name: str
    weekdays: frozenset[int] = ALL_DAYS
    exclude: frozenset[date] = frozenset()
    include: tuple[Calendar, ...] = ()
    # What the includes add up to, computed once: `allows` is called for every day walked.
    _weekdays: frozenset[int] = field(init=False, repr=False, compare=False)
    _exclude: frozenset[date] = field(init=False, repr=False, compare=False)
    _business: dict = field(init=False, repr=False, compare=False, default_factory=dict)

    def __post_init__(self) -> None:
        weekdays, exclude = set(self.weekdays), set(self.exclude)
        for other in self.include:
            weekdays &= other._weekdays
            exclude |= other._exclude
        object.__setattr__(self, "_weekdays", frozenset(weekdays))
        object.__setattr__(self, "_exclude", frozenset(exclude))

    def allows(self, d: date) -> bool:
        return d.weekday() in self._weekdays and d not in self._exclude

    def excluded_by(self, d: date) -> str | None:
        """The name of the calendar (this one or an included one) that excludes d, or None."""
        if d.weekday() not in self.weekdays or d in self.exclude:
            return self.name
        for other in self.include:
            name = other.excluded_by(d)
            if name is not None:
                return name
        return None

    def business_days(self, year: int, month: int) -> tuple[int, ...]:
        key = (year, month)
        days = self._business.get(key)
        if days is None:
            days = tuple(d for d in _month_days(year, month)
                         if date(year, month, d).weekday() in MON_FRI
                         and self.allows(date(year, month, d)))
            self._business[key] = days
        return days

    def describe(self) -> str:
        days = ",".join(WEEKDAYS[i] for i in sorted(self.weekdays))
        extra = f"; includes {', '.join(c.name for c in self.include)}" if self.include else ""
        return f"{self.name} ({days}; {len(self.exclude)} excluded dates{extra})"


def _month_days(year: int, month: int) -> range:
    following = date(year + month // 12, month % 12 + 1, 1)
    return range(1, (following - date(year, month, 1)).days + 1)


_PLAIN_WEEKS: dict[tuple[int, int], tuple[int, ...]] = {}


def business_days(calendar: Calendar | None, year: int, month: int) -> tuple[int, ...]:
    """The business days of a month (days of the month, ascending): Monday-Friday, and allowed
    by the calendar when there is one."""
    if calendar is not None:
        return calendar.business_days(year, month)
    days = _PLAIN_WEEKS.get((year, month))
    if days is None:
        days = tuple(d for d in _month_days(year, month)
                     if date(year, month, d).weekday() in MON_FRI)
        _PLAIN_WEEKS[(year, month)] = days
    return days


@dataclass(frozen=True)
class CalendarDef:
    """A calendar as written in a file: what it includes is still a list of names."""

    name: str
    weekdays: frozenset[int]
    exclude: frozenset[date]
    include: tuple[str, ...]


def parse_calendar(name: str, table: Any) -> tuple[CalendarDef | None, Problems]:
    """Read one calendar's TOML table; problems are (key path below it, message)."""
    problems: Problems = []
    if not isinstance(table, dict):
        return None, [((), "must be a table")]
    for key in table:
        if key not in FIELDS:
            problems.append(((key,), f"unknown field; expected one of: {', '.join(FIELDS)}"))
    weekdays = ALL_DAYS
    if "weekdays" in table:
        value = table["weekdays"]
        names = value if isinstance(value, list) else [value]
        wrong = [n for n in names if not isinstance(n, str) or n.lower()[:3] not in WEEKDAYS]
        if not isinstance(value, list) or not value or wrong:
            problems.append((("weekdays",),
                             f"must be a non-empty list of day names ({', '.join(WEEKDAYS)})"))
        else:
            weekdays = frozenset(WEEKDAYS.index(n.lower()[:3]) for n in names)
    exclude = _exclude(table.get("exclude", []), problems)
    include = table.get("include", [])
    if not isinstance(include, list) or not all(isinstance(n, str) and n for n in include):
        problems.append((("include",), 'must be a list of calendar names, '
                                       'e.g. include = ["public-holidays-de"]'))
        include = []
    elif name in include:
        problems.append((("include",), "a calendar cannot include itself"))
    if problems:
        return None, problems
    return CalendarDef(name, weekdays, frozenset(exclude), tuple(include)), []


def _exclude(value: Any, problems: Problems) -> set[date]:
    if isinstance(value, dict):  # by year: { 2026 = ["01-01", "12-25"] }
        return _exclude_by_year(value, problems)
    dates: set[date] = set()
    if not isinstance(value, list):
        problems.append((("exclude",), f"must be {_DATE_HINT}"))
        return dates
    for item in value:
        if isinstance(item, date):  # a bare TOML date: 2026-12-25
            dates.add(item)
            continue
        try:
            dates.add(date.fromisoformat(str(item)))
        except ValueError:
            problems.append((("exclude",), f"not a date: {item!r} (use YYYY-MM-DD)"))
    return dates


def _exclude_by_year(value: dict[Any, Any], problems: Problems) -> set[date]:
    dates: set[date] = set()
    for year, days in value.items():
        if not (isinstance(year, str) and year.isdigit() and len(year) == 4):
            problems.append((("exclude", str(year)), "not a year (use e.g. 2026)"))
            continue
        if not isinstance(days, list):
            problems.append((("exclude", year), 'must be a list of days like "12-25"'))
            continue
        for item in days:
            text = item.isoformat() if isinstance(item, date) else str(item)
            if len(text) == 5:  # "12-25"
                text = f"{year}-{text}"
            try:
                day = date.fromisoformat(text)
            except ValueError:
                problems.append((("exclude", year), f"not a day of {year}: {item!r} (use MM-DD)"))
                continue
            if day.year != int(year):
                problems.append((("exclude", year), f"{item!r} is not in {year}"))
            else:
                dates.add(day)
    return dates


def resolve_calendars(defs: Mapping[str, CalendarDef], known: Mapping[str, Calendar],
                      final: bool = True) -> tuple[dict[str, Calendar], dict[str, str]]:
    """Build calendars whose includes are known or defined alongside; (built, {name: problem}).

    Unless `final`, a calendar including one not known yet is left out without a problem (a
    later job file may define it).
    """
    built: dict[str, Calendar] = {}
    problems: dict[str, str] = {}

    def build(name: str, path: tuple[str, ...]) -> Calendar | None:
        if name in built:
            return built[name]
        if name not in defs:
            return known.get(name)
        if name in path:
            cycle = " -> ".join(path[path.index(name):] + (name,))
            problems.setdefault(path[0], f"include cycle: {cycle}")
            return None
        spec = defs[name]
        parts = []
        for other in spec.include:
            calendar = build(other, path + (name,))
            if calendar is None:
                if other not in defs and other not in known and final:
                    names = sorted(set(defs) | set(known))
                    problems.setdefault(name, f"unknown calendar {other!r}; known: "
                                              f"{', '.join(names) or 'none'}")
                return None
            parts.append(calendar)
        built[name] = Calendar(name, spec.weekdays, spec.exclude, tuple(parts))
        return built[name]

    for name in defs:
        build(name, ())
    return built, problems


def load_calendars(path: str | Path) -> dict[str, Calendar]:
    """Read a calendars file (``[calendars.NAME]`` tables); a mistake raises ConfigError."""
    data, lines = read_toml(path, ConfigError)
    for key in data:
        if key != "calendars":
            raise ConfigError(path, lines.line(key), key,
                              "unknown field; expected one of: calendars")
    tables = data.get("calendars", {})
    if not isinstance(tables, dict):
        raise ConfigError(path, lines.line("calendars"), "calendars", "must be a table")
    defs = {}
    for name, table in tables.items():
        spec, problems = parse_calendar(name, table)
        if problems:
            key, message = problems[0]
            where = ("calendars", name) + key
            raise ConfigError(path, lines.line(*where), ".".join(where), message)
        defs[name] = spec
    calendars, problems = resolve_calendars(defs, {})
    for name, message in problems.items():
        where = ("calendars", name, "include")
        raise ConfigError(path, lines.line(*where), ".".join(where), message)
    return calendars
