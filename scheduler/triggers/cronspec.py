"""Parsing a 5-field cron expression into the sets the walk in scheduler.triggers.cron matches.

croniter (pallets-eco) checks and expands the ordinary parts of every field. The day specials
are read here: croniter 7 expands `L` and `5#3` but not `LW`, `5L` (it spells that `L5`) or `W`
inside a list, and its expand() drops the `W` of `15W`; the walk needs them as facts about a
date, which `CronSpec.day_matches` checks (tests compare it with croniter's own get_next where
croniter supports a special).
"""

from __future__ import annotations

import calendar as _gregorian
import re
from dataclasses import dataclass
from datetime import date
from functools import lru_cache

from croniter import croniter

MACROS = {
    "@hourly": "0 * * * *", "@daily": "0 0 * * *", "@midnight": "0 0 * * *",
    "@weekly": "0 0 * * 0", "@monthly": "0 0 1 * *", "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
}
FIELD_NAMES = ("minute", "hour", "day-of-month", "month", "day-of-week")
_MONTH_NAMES = {"jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"}
_DAY_NAMES = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
_FIELD_CHARS = re.compile(r"[0-9a-z*,/-]+")
_NEAREST = re.compile(r"([0-9]{1,2})w")  # 15W: the weekday nearest the 15th
_NTH = re.compile(r"([0-7]|[a-z]{3})#([1-5])")  # 5#3: the third Friday
_LAST_DOW = re.compile(r"([0-7]|[a-z]{3})l")  # 5L: the last Friday
# croniter 7 expands a one-value range ("5-5", "mon-mon", "3-3/2") to the whole field: such a
# range is given to it as its one value.
_ONE_VALUE_RANGE = re.compile(r"(?<![\w*])([0-9a-z]+)-\1(?:/[0-9]+)?(?![\w-])")


@dataclass(frozen=True, slots=True)
class CronSpec:
    """An expanded 5-field expression. Weekdays use date.weekday() numbering: Monday = 0."""

    minutes: tuple[int, ...]
    hours: tuple[int, ...]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]
    restrict_both: bool  # Vixie cron: day-of-month OR day-of-week when neither starts with '*'
    real_time: bool  # Vixie cron: the minute or the hour field begins with '*'
    last_day: bool = False  # L
    last_weekday: bool = False  # LW
    nearest_weekday: frozenset[int] = frozenset()  # 15W
    nth_weekday: frozenset[tuple[int, int]] = frozenset()  # 5#3 -> (4, 3)
    last_of_weekday: frozenset[int] = frozenset()  # 5L -> 4
    specials: bool = False  # any of the five above: the slower day check is needed

    def day_matches(self, d: date) -> bool:
        if d.month not in self.months:
            return False
        by_dom = d.day in self.days
        by_dow = d.weekday() in self.weekdays
        if self.specials:
            by_dom = by_dom or self._special_dom(d)
            by_dow = by_dow or self._special_dow(d)
        return (by_dom or by_dow) if self.restrict_both else (by_dom and by_dow)

    def _special_dom(self, d: date) -> bool:
        length = _month_length(d.year, d.month)
        if self.last_day and d.day == length:
            return True
        if self.last_weekday and d.day == nearest_weekday(d.year, d.month, length):
            return True
        return any(n <= length and d.day == nearest_weekday(d.year, d.month, n)
                   for n in self.nearest_weekday)

    def _special_dow(self, d: date) -> bool:
        wd = d.weekday()
        if (wd, (d.day - 1) // 7 + 1) in self.nth_weekday:
            return True
        return wd in self.last_of_weekday and d.day + 7 > _month_length(d.year, d.month)


@lru_cache(maxsize=4096)
def _month_length(year: int, month: int) -> int:
    return _gregorian.monthrange(year, month)[1]


def nearest_weekday(year: int, month: int, day: int) -> int:
    """The Monday-Friday day of the month nearest `day`, never leaving the month (Quartz's W:
    a Saturday 1st moves to Monday 3rd, a Sunday last day to Friday)."""
    wd = date(year, month, day).weekday()
    if wd == 5:
        return day - 1 if day > 1 else day + 2
    if wd == 6:
        return day + 1 if day < _month_length(year, month) else day - 2
    return day


def _expanded(values: list, full: range) -> list[int]:
    return list(full) if values == ["*"] else sorted({int(v) for v in values})


def _weekday(token: str) -> int:
    """A cron day-of-week token (0-7 or a name; 0 and 7 are Sunday) as date.weekday()."""
    number = _DAY_NAMES.index(token) if token in _DAY_NAMES else int(token)
    return (number - 1) % 7


# The values each field may hold (day-of-week: 0 and 7 are both Sunday).
FIELD_RANGES = ((0, 59), (0, 23), (1, 31), (1, 12), (0, 7))


def _bad(expr: str, index: int, field: str, why: str = "is not valid") -> ValueError:
    return ValueError(f"bad cron expression {expr!r}: {FIELD_NAMES[index]} field {field!r} {why}")


@lru_cache(maxsize=4096)
def parse_cron(expr: str) -> CronSpec:
    """Expand a strict 5-field cron expression (or @hourly...); ValueError when it is not one."""
    text = " ".join(expr.lower().split())
    text = MACROS.get(text, text)
    fields = text.split(" ")
    if len(fields) != 5 or text.startswith("@"):
        raise ValueError(f"not a cron expression: {expr!r} (want 5 fields: minute hour "
                         "day-of-month month day-of-week, or @hourly/@daily/@weekly/...)")
    special: dict[str, object] = {"last_day": False, "last_weekday": False, "nearest": set(),
                                  "nth": set(), "last_of": set()}
    plain = list(fields)
    for index in (2, 4):
        plain[index] = _take_specials(expr, index, fields[index], special)
    for index, field in enumerate(plain):
        if field == "":
            continue
        names = _MONTH_NAMES if index == 3 else set(_DAY_NAMES) if index == 4 else set()
        bad_words = [w for w in re.findall(r"[a-z]+", field) if w not in names]
        if not _FIELD_CHARS.fullmatch(field) or bad_words:
            raise _bad(expr, index, fields[index])
        # croniter's own message names neither the field nor the bound ("[61 * * * *] is not
        # acceptable, out of range"); a step (after '/') is not a value of the field.
        low, high = FIELD_RANGES[index]
        for value in (int(v) for v in re.findall(r"(?<![/\d])\d+", field)):
            if not low <= value <= high:
                raise _bad(expr, index, fields[index],
                           f"is out of range: {value} is not in {low}-{high}")
    try:
        expanded, nth = croniter.expand(_ONE_VALUE_RANGE.sub(r"\1", " ".join(f or "*"
                                                                           for f in plain)))
    except Exception as exc:  # croniter raises several classes, all of them mean "bad input"
        raise ValueError(f"bad cron expression {expr!r}: {exc}") from None
    if nth or any(v == "l" for values in expanded for v in values):  # not reachable: read above
        raise ValueError(f"bad cron expression {expr!r}: unexpected L or #")
    minutes, hours, days, months, dows = expanded
    specials = any(special.values())
    return CronSpec(
        minutes=tuple(_expanded(minutes, range(60))),
        hours=tuple(_expanded(hours, range(24))),
        days=frozenset(_expanded(days, range(1, 32))) if plain[2] else frozenset(),
        months=frozenset(_expanded(months, range(1, 13))),
        weekdays=frozenset(_weekday(str(d)) for d in _expanded(dows, range(7)))
        if plain[4] else frozenset(),
        restrict_both=not fields[2].startswith("*") and not fields[4].startswith("*"),
        real_time=fields[0].startswith("*") or fields[1].startswith("*"),
        last_day=bool(special["last_day"]), last_weekday=bool(special["last_weekday"]),
        nearest_weekday=frozenset(special["nearest"]), nth_weekday=frozenset(special["nth"]),
        last_of_weekday=frozenset(special["last_of"]), specials=specials,
    )


def _take_specials(expr: str, index: int, field: str, found: dict) -> str:
    """Record the day specials of a day-of-month (2) or day-of-week (4) field; the rest."""
    rest = []
    for item in field.split(","):
        if index == 2 and item == "l":
            found["last_day"] = True
        elif index == 2 and item == "lw":
            found["last_weekday"] = True
        elif index == 2 and (m := _NEAREST.fullmatch(item)):
            if not 1 <= int(m[1]) <= 31:
                raise _bad(expr, index, field, f"has {item!r}: W needs a day 1-31")
            found["nearest"].add(int(m[1]))
        elif index == 4 and (m := _NTH.fullmatch(item)):
            found["nth"].add((_weekday_token(expr, field, m[1]), int(m[2])))
        elif index == 4 and (m := _LAST_DOW.fullmatch(item)):
            found["last_of"].add(_weekday_token(expr, field, m[1]))
        elif "#" in item or (index == 2 and "w" in item) or item.endswith("l") or item == "l":
            why = ("has a bad '#' (use e.g. 5#3, the third Friday; 1-5)" if "#" in item
                   else "is not valid")
            raise _bad(expr, index, field, why)
        else:
            rest.append(item)
    return ",".join(rest)


def _weekday_token(expr: str, field: str, token: str) -> int:
    if token not in _DAY_NAMES and not token.isdigit():
        raise _bad(expr, 4, field)
    return _weekday(token)
