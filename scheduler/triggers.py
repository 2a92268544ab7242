"""When a job fires: cron expressions, fixed intervals and one-off times, in a job's time zone.

Cron matching is done on local WALL time, then each matching wall time is placed on the UTC
time line by one rule (Debian cron's and JAMS's, see docs):
- a wall time skipped by spring-forward fires once, at the first instant after the gap;
- a wall time repeated by fall-back fires once, at its first occurrence, except that a job whose
  hour field covers every hour fires at both occurrences, so that "*/15" keeps a 15-minute
  rhythm of real time;
- fires are UTC instants, so two wall times landing on one instant fire once.
croniter (pallets-eco) parses and expands the expression; the matching itself is a small walk over
the expanded sets, which is both exact about the rule above and cheap enough for 100k jobs.
"""

from __future__ import annotations

import bisect
import re
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter

from scheduler.calendars import Calendar
from scheduler.units import format_duration, parse_duration

_MACROS = {
    "@hourly": "0 * * * *", "@daily": "0 0 * * *", "@midnight": "0 0 * * *",
    "@weekly": "0 0 * * 0", "@monthly": "0 0 1 * *", "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
}
_FIELD_NAMES = ("minute", "hour", "day-of-month", "month", "day-of-week")
_MONTH_NAMES = {"jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"}
_DAY_NAMES = {"sun", "mon", "tue", "wed", "thu", "fri", "sat"}
_FIELD_CHARS = re.compile(r"[0-9a-z*,/-]+")
_MINUTE = timedelta(minutes=1)
_DAY = timedelta(days=1)
_NEAR = timedelta(hours=3)  # wider than any real DST shift
_HORIZON_DAYS = 366 * 28  # the Gregorian weekday/leap pattern repeats within 28 years


@dataclass(frozen=True)
class CronSpec:
    """An expanded 5-field expression."""

    minutes: tuple[int, ...]
    hours: tuple[int, ...]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]  # date.weekday() numbering: Monday = 0
    restrict_both: bool  # Vixie cron: day-of-month OR day-of-week when neither starts with '*'

    @property
    def every_hour(self) -> bool:
        return len(self.hours) == 24

    def day_matches(self, d: date) -> bool:
        if d.month not in self.months:
            return False
        by_dom = d.day in self.days
        by_dow = d.weekday() in self.weekdays
        return (by_dom or by_dow) if self.restrict_both else (by_dom and by_dow)


def _expanded(values: list, full: range) -> list[int]:
    return list(full) if values == ["*"] else sorted({int(v) for v in values})


@lru_cache(maxsize=4096)
def parse_cron(expr: str) -> CronSpec:
    """Expand a strict 5-field cron expression (or @hourly...); ValueError when it is not one."""
    text = " ".join(expr.lower().split())
    text = _MACROS.get(text, text)
    fields = text.split(" ")
    if len(fields) != 5 or text.startswith("@"):
        raise ValueError(f"not a cron expression: {expr!r} (want 5 fields: minute hour "
                         "day-of-month month day-of-week, or @hourly/@daily/@weekly/...)")
    for index, field in enumerate(fields):
        names = _MONTH_NAMES if index == 3 else _DAY_NAMES if index == 4 else set()
        bad_words = [w for w in re.findall(r"[a-z]+", field) if w not in names]
        if not _FIELD_CHARS.fullmatch(field) or bad_words:
            raise ValueError(f"bad cron expression {expr!r}: {_FIELD_NAMES[index]} field "
                             f"{field!r} is not valid")
    try:
        expanded, nth = croniter.expand(text)
    except Exception as exc:  # croniter raises several classes, all of them mean "bad input"
        raise ValueError(f"bad cron expression {expr!r}: {exc}") from None
    if nth or any(v == "l" for values in expanded for v in values):
        raise ValueError(f"bad cron expression {expr!r}: L and # are not supported")
    minutes, hours, days, months, dows = expanded
    return CronSpec(
        minutes=tuple(_expanded(minutes, range(60))),
        hours=tuple(_expanded(hours, range(24))),
        days=frozenset(_expanded(days, range(1, 32))),
        months=frozenset(_expanded(months, range(1, 13))),
        weekdays=frozenset((d - 1) % 7 for d in _expanded(dows, range(7))),
        restrict_both=not fields[2].startswith("*") and not fields[4].startswith("*"),
    )


@lru_cache(maxsize=1024)
def zone(name: str) -> ZoneInfo:
    """The named IANA zone; ValueError for an unknown one."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, TypeError):
        raise ValueError(f"unknown time zone {name!r} (use an IANA name like Europe/Berlin)") \
            from None


def _utc(naive: datetime) -> datetime:
    return naive.replace(tzinfo=UTC)


@lru_cache(maxsize=1024)
def _transition(tz: ZoneInfo, before: datetime, after: datetime) -> datetime:
    """The first UTC instant with the new offset, between two instants that straddle it."""
    old = _utc(before).astimezone(tz).utcoffset()
    while after - before > timedelta(seconds=1):
        middle = before + (after - before) / 2
        middle = middle.replace(microsecond=0)
        if _utc(middle).astimezone(tz).utcoffset() == old:
            before = middle
        else:
            after = middle
    return _utc(after)


def resolve_wall(wall: datetime, tz: ZoneInfo) -> tuple[datetime, datetime | None]:
    """(first UTC instant of a local wall time, second instant if fall-back repeats it)."""
    first = wall.replace(tzinfo=tz, fold=0).utcoffset()
    second = wall.replace(tzinfo=tz, fold=1).utcoffset()
    if first == second:
        return _utc(wall - first), None
    if first > second:  # repeated by fall-back: fold=0 is the earlier occurrence
        return _utc(wall - first), _utc(wall - second)
    return _transition(tz, wall - second, wall - first), None  # skipped by spring-forward


def _next_wall(spec: CronSpec, calendar: Calendar | None, after: datetime) -> datetime | None:
    """The first matching local wall time (minute resolution) strictly after `after`."""
    start = after.replace(second=0, microsecond=0) + _MINUTE
    day = start.date()
    hour, minute = start.hour, start.minute
    last = day + timedelta(days=_HORIZON_DAYS)
    while day <= last:
        if day.month not in spec.months:
            day = date(day.year + day.month // 12, day.month % 12 + 1, 1)
            hour = minute = 0
            continue
        if spec.day_matches(day) and (calendar is None or calendar.allows(day)):
            found = _first_time(spec, hour, minute)
            if found is not None:
                return datetime(day.year, day.month, day.day, found[0], found[1])
        day += _DAY
        hour = minute = 0
    return None


def _first_time(spec: CronSpec, hour: int, minute: int) -> tuple[int, int] | None:
    for h in spec.hours[bisect.bisect_left(spec.hours, hour):]:
        if h > hour:
            return h, spec.minutes[0]
        at = bisect.bisect_left(spec.minutes, minute)
        if at < len(spec.minutes):
            return h, spec.minutes[at]
    return None


def _aware(t: datetime) -> datetime:
    return t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC)


class _Trigger(ABC):
    """What every trigger answers; `fires_between` is derived from `next_after`."""

    @abstractmethod
    def next_after(self, t: datetime) -> datetime | None:
        """The first fire strictly after t (aware; answered in UTC), None if it never fires."""

    def fires_between(self, start: datetime, end: datetime) -> Iterator[datetime]:
        """Fire instants with start < fire <= end, in order, computed lazily."""
        end = _aware(end)
        fire = self.next_after(start)
        while fire is not None and fire <= end:
            yield fire
            fire = self.next_after(fire)


@dataclass(frozen=True)
class CronTrigger(_Trigger):
    expr: str
    tz: str = "UTC"
    calendar: Calendar | None = None

    def __post_init__(self) -> None:
        parse_cron(self.expr)
        zone(self.tz)

    def next_after(self, t: datetime) -> datetime | None:
        """The first fire strictly after t (aware; answered in UTC), None if it never fires."""
        return _cron_next(self.expr, self.tz, self.calendar, _aware(t))

    def describe(self) -> str:
        extra = f", calendar {self.calendar.name}" if self.calendar else ""
        return f"cron {self.expr!r} ({self.tz}{extra})"


@lru_cache(maxsize=65536)  # many jobs share an expression and are planned from the same instant
def _cron_next(expr: str, tz_name: str, calendar: Calendar | None, t: datetime) -> datetime | None:
    spec = parse_cron(expr)
    if tz_name == "UTC":
        wall = _next_wall(spec, calendar, t.replace(tzinfo=None))
        return None if wall is None else _utc(wall)
    tz = zone(tz_name)
    local = t.astimezone(tz)
    near_shift = (t - _NEAR).astimezone(tz).utcoffset() != (t + _NEAR).astimezone(tz).utcoffset()
    # Near a shift, wall times before t's own may still have a later second occurrence.
    wall = local.replace(tzinfo=None) - (_NEAR if near_shift else timedelta(0))
    best = None
    while (wall := _next_wall(spec, calendar, wall)) is not None:
        first, second = resolve_wall(wall, tz)
        if first > t:  # first occurrences grow with wall time: nothing later can beat this one
            return first if best is None else min(best, first)
        if second is not None and spec.every_hour and second > t:
            best = second if best is None else min(best, second)
    return best


@dataclass(frozen=True)
class IntervalTrigger(_Trigger):
    """Fires at anchor + k * seconds, so every scheduler computes the same instants."""

    seconds: float
    tz: str = "UTC"
    anchor: datetime = datetime(1970, 1, 1, tzinfo=UTC)
    calendar: Calendar | None = None

    def next_after(self, t: datetime) -> datetime | None:
        step = timedelta(seconds=self.seconds)
        t = _aware(t)
        for _ in range(_HORIZON_DAYS):
            fire = self.anchor + max((t - self.anchor) // step + 1, 0) * step
            if self.calendar is None:
                return fire
            local = fire.astimezone(zone(self.tz))
            if self.calendar.allows(local.date()):
                return fire
            # Skip to the end of that local day, then take the next interval point.
            midnight = datetime.combine(local.date() + _DAY, datetime.min.time())
            t = resolve_wall(midnight, zone(self.tz))[0] - timedelta(microseconds=1)
        return None

    def describe(self) -> str:
        extra = f" ({self.tz}, calendar {self.calendar.name})" if self.calendar else ""
        return f"every {format_duration(self.seconds)}{extra}"


@dataclass(frozen=True)
class OnceTrigger(_Trigger):
    """A one-off local time; a time in a DST gap or repeat resolves like cron does."""

    at: datetime  # naive: wall time in tz
    tz: str = "UTC"

    @property
    def instant(self) -> datetime:
        return resolve_wall(self.at, zone(self.tz))[0]

    def next_after(self, t: datetime) -> datetime | None:
        instant = self.instant
        return instant if instant > _aware(t) else None

    def describe(self) -> str:
        return f"once at {self.at.isoformat(timespec='minutes')} ({self.tz})"


Trigger = CronTrigger | IntervalTrigger | OnceTrigger


@lru_cache(maxsize=65536)  # identical definitions share one trigger (and its caches)
def make_trigger(schedule: str | None = None, every: str | int | float | None = None,
                 at: str | datetime | None = None, timezone: str = "UTC",
                 calendar: Calendar | None = None) -> Trigger:
    """Build the trigger for exactly one of schedule | every | at; ValueError when wrong."""
    given = [k for k, v in (("schedule", schedule), ("every", every), ("at", at)) if v is not None]
    if len(given) != 1:
        raise ValueError("give exactly one of schedule, every, at"
                         + (f" (got {', '.join(given)})" if given else ""))
    if not isinstance(timezone, str):
        raise ValueError(f"unknown time zone {timezone!r} (use an IANA name like Europe/Berlin)")
    zone(timezone)
    if schedule is not None:
        if not isinstance(schedule, str):
            raise ValueError(f"not a cron expression: {schedule!r}")
        return CronTrigger(schedule, timezone, calendar)
    if every is not None:
        seconds = parse_duration(every)
        if seconds < 1:
            raise ValueError(f"interval {every!r} is shorter than 1s")
        return IntervalTrigger(seconds, timezone, calendar=calendar)
    if isinstance(at, str):
        try:
            at = datetime.fromisoformat(at)
        except ValueError:
            raise ValueError(f"not a local date and time: {at!r} (use e.g. 2026-12-01T08:00)") \
                from None
    if not isinstance(at, datetime):
        raise ValueError(f"not a local date and time: {at!r} (use e.g. 2026-12-01T08:00)")
    if at.tzinfo is not None:
        at = at.astimezone(zone(timezone)).replace(tzinfo=None)
    return OnceTrigger(at, timezone)
