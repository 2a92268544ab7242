"""Named calendars: on which local dates a job may fire."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

from scheduler.config import ConfigError
from scheduler.tomlsrc import read_toml

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")  # index = date.weekday()
ALL_DAYS = frozenset(range(7))
Problems = list[tuple[tuple[str, ...], str]]  # (key path below the table, message)


@dataclass(frozen=True)
class Calendar:
    name: str
    weekdays: frozenset[int] = ALL_DAYS
    exclude: frozenset[date] = frozenset()

    def allows(self, d: date) -> bool:
        return d.weekday() in self.weekdays and d not in self.exclude

    def describe(self) -> str:
        days = ",".join(WEEKDAYS[i] for i in sorted(self.weekdays))
        return f"{self.name} ({days}; {len(self.exclude)} excluded dates)"


def parse_calendar(name: str, table: Any) -> tuple[Calendar | None, Problems]:
    """Build one calendar from its TOML table; problems are (key path below it, message)."""
    problems: Problems = []
    if not isinstance(table, dict):
        return None, [((), "must be a table")]
    for key in table:
        if key not in ("weekdays", "exclude"):
            problems.append(((key,), "unknown field; expected one of: weekdays, exclude"))
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
    exclude: set[date] = set()
    value = table.get("exclude", [])
    if not isinstance(value, list):
        problems.append((("exclude",), "must be a list of dates like \"2026-12-25\""))
    else:
        for item in value:
            if isinstance(item, date):  # a bare TOML date: 2026-12-25
                exclude.add(item)
                continue
            try:
                exclude.add(date.fromisoformat(str(item)))
            except ValueError:
                problems.append((("exclude",), f"not a date: {item!r} (use YYYY-MM-DD)"))
    if problems:
        return None, problems
    return Calendar(name, weekdays, frozenset(exclude)), []


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
    calendars = {}
    for name, table in tables.items():
        calendar, problems = parse_calendar(name, table)
        if problems:
            key, message = problems[0]
            where = ("calendars", name) + key
            raise ConfigError(path, lines.line(*where), ".".join(where), message)
        calendars[name] = calendar
    return calendars
