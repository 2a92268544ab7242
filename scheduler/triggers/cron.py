"""Cron triggers: which local wall times match, and when each one fires in UTC.

Matching is done on local WALL time (expression, calendar, business day); each matching wall
time is then placed on the UTC time line by the job's DstPolicy (scheduler.triggers.dst), whose
default is Vixie cron's rule (docs/semantics.md, "What fires when"). Fires are UTC instants, so
two wall times landing on one instant fire once. The walk over the expanded sets is exact about
the rule and cheap enough for 100k jobs.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from functools import lru_cache
from typing import NamedTuple
from zoneinfo import ZoneInfo

from scheduler.calendars import Calendar, business_days
from scheduler.triggers.base import DAY, HORIZON_DAYS, MINUTE, BaseTrigger, aware
from scheduler.triggers.cronspec import CronSpec, parse_cron
from scheduler.triggers.dst import (
    BY_RULE,
    NEAR,
    REPEAT,
    DstPolicy,
    locate,
    near_shift,
    transition,
    utc,
    zone,
)

MAX_BUSINESS_DAY = 23  # no month has more than 23 weekdays


def check_business_days(value: tuple[object, ...]) -> None:
    """ValueError unless every value is a business day number: 1..23 or -1..-23."""
    for n in value or (None,):
        if isinstance(n, bool) or not isinstance(n, int) or n == 0 \
                or not -MAX_BUSINESS_DAY <= n <= MAX_BUSINESS_DAY:
            raise ValueError(f"business_day must be 1..{MAX_BUSINESS_DAY} (the Nth business day "
                             f"of the month), -1..-{MAX_BUSINESS_DAY} (counted from its end) or "
                             f"a list of them; got {n!r}")


def is_business_day(d: date, wanted: tuple[int, ...], calendar: Calendar | None) -> bool:
    """Whether d is the Nth business day of its month for one N of `wanted` (-1: the last)."""
    days = business_days(calendar, d.year, d.month)
    try:
        at = days.index(d.day)
    except ValueError:
        return False
    return any(at == n - 1 if n > 0 else at == len(days) + n for n in wanted)


@dataclass(frozen=True)
class CronTrigger(BaseTrigger):
    expr: str
    tz: str = "UTC"
    calendar: Calendar | None = None
    dst: DstPolicy = BY_RULE
    business_day: tuple[int, ...] = ()  # e.g. (1,) the first, (-1,) the last of each month

    def __post_init__(self) -> None:
        parse_cron(self.expr)
        zone(self.tz)
        if self.business_day:
            check_business_days(self.business_day)

    @property
    def spec(self) -> CronSpec:
        return parse_cron(self.expr)

    @property
    def policy(self) -> DstPolicy:
        """The DST policy in force: the job's, completed by Vixie cron's rule."""
        return self.dst.resolved(self.spec.real_time)

    def next_after(self, t: datetime) -> datetime | None:
        """The first fire strictly after t (aware; answered in UTC), None if it never fires."""
        return _cron_next(self.expr, self.tz, self.calendar, self.dst, self.business_day,
                          aware(t))

    def walls_after(self, wall: datetime) -> datetime | None:
        """The first matching local wall time strictly after a naive local `wall`."""
        return next_wall(self.spec, self.calendar, self.business_day, wall)

    def describe(self) -> str:
        extra = f", calendar {self.calendar.name}" if self.calendar else ""
        if self.business_day:
            extra += f", business day {','.join(map(str, self.business_day))}"
        if self.dst != BY_RULE:
            extra += f", dst {self.dst.describe()}"
        return f"cron {self.expr!r} ({self.tz}{extra})"


def next_wall(spec: CronSpec, calendar: Calendar | None, business: tuple[int, ...],
              after: datetime) -> datetime | None:
    """The first matching local wall time (minute resolution) strictly after `after`."""
    start = after.replace(second=0, microsecond=0) + MINUTE
    day = start.date()
    hour, minute = start.hour, start.minute
    last = day + timedelta(days=HORIZON_DAYS)
    while day <= last:
        if day.month not in spec.months:
            day = date(day.year + day.month // 12, day.month % 12 + 1, 1)
            hour = minute = 0
            continue
        if (spec.day_matches(day) and (calendar is None or calendar.allows(day))
                and (not business or is_business_day(day, business, calendar))):
            found = _first_time(spec, hour, minute)
            if found is not None:
                return datetime(day.year, day.month, day.day, found[0], found[1])
        day += DAY
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


@lru_cache(maxsize=65536)  # many jobs share an expression and are planned from the same instant
def _cron_next(expr: str, tz_name: str, calendar: Calendar | None, dst: DstPolicy,
               business: tuple[int, ...], t: datetime) -> datetime | None:
    spec = parse_cron(expr)
    if tz_name == "UTC":
        wall = next_wall(spec, calendar, business, t.replace(tzinfo=None))
        return None if wall is None else utc(wall)
    tz = zone(tz_name)
    policy = dst.resolved(spec.real_time)
    local = t.astimezone(tz)
    wall = local.replace(tzinfo=None)
    # Every wall time after t's own fires after t (or not at all); only a fall-back coming up
    # shortly adds earlier ones, the repeated wall times whose second pass is still ahead. Those
    # passes all come after the fall-back, so they are looked at only when nothing fires before.
    rule = _Rule(spec, calendar, business, tz, policy)
    best = _walk(rule, t, wall, second_pass=local.fold == 1)
    fall_back = _fall_back_ahead(t, tz)
    if fall_back is not None and (best is None or best > fall_back):
        repeat_from = fall_back.astimezone(tz).replace(tzinfo=None)  # the first repeated wall
        if repeat_from <= wall:
            second = _walk(rule, t, repeat_from - MINUTE, until=wall)
            if second is not None and (best is None or second < best):
                best = second
    return best


class _Rule(NamedTuple):
    """What decides the fires of one expression in one zone."""

    spec: CronSpec
    calendar: Calendar | None
    business: tuple[int, ...]
    tz: ZoneInfo
    policy: DstPolicy


def _walk(rule: _Rule, t: datetime, wall: datetime, until: datetime | None = None,
          second_pass: bool = False) -> datetime | None:
    """The first fire after t of the wall times after `wall`. Second passes of repeated wall
    times grow with the wall time, so the first one found is the answer when nothing else can
    come before it: the walk is only over repeated wall times (up to `until`), or t is itself
    in a second pass (every later first pass is behind it)."""
    spec, calendar, business, tz, policy = rule
    best = None
    while (wall := next_wall(spec, calendar, business, wall)) is not None:
        if until is not None and wall > until:
            return best
        placed = locate(wall, tz)
        # placed.first never decreases with the wall time, and no instant of a wall time is
        # before its `first`: once it reaches the best found, nothing later can beat it.
        if best is not None and placed.first >= best:
            return best
        for fire in placed.instants(policy):
            if fire > t and (best is None or fire < best):
                best = fire
        if best is not None and (until is not None or best <= placed.first
                                 or (second_pass and placed.kind == REPEAT)):
            return best
    return best


def _fall_back_ahead(t: datetime, tz: ZoneInfo) -> datetime | None:
    """The instant of a fall-back (an offset going down) within NEAR after t, if any."""
    if not near_shift(t, tz):
        return None
    if (t + NEAR).astimezone(tz).utcoffset() >= t.astimezone(tz).utcoffset():
        return None
    # Bisected between whole hours, so that every t of that hour shares one cached answer (no
    # zone changes its offset twice within a few hours).
    hour = t.replace(tzinfo=None, minute=0, second=0, microsecond=0)
    return transition(tz, hour, hour + NEAR + timedelta(hours=1))
