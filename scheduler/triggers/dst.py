"""Placing a local wall time on the UTC time line, across DST and other offset changes.

A wall time is *normal* (it happens once), in a *gap* (spring-forward skips it) or *repeated*
(fall-back shows it twice). What a schedule does with gaps and repeats is its DstPolicy; the
default follows Vixie cron (docs/semantics.md, "What fires when"):
- real-time schedules (minute or hour field beginning with '*'): gap = skip, repeat = both;
- fixed-time schedules (neither does): gap = after (once, at the first instant after the gap),
  repeat = first.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

GAP_CHOICES = ("after", "skip")
REPEAT_CHOICES = ("first", "second", "both")
NORMAL, GAP, REPEAT = "normal", "gap", "repeat"
NEAR = timedelta(hours=3)  # wider than any real offset change
_SECOND = timedelta(seconds=1)


@dataclass(frozen=True, slots=True)
class DstPolicy:
    """A job's `dst = { gap = ..., repeat = ... }`; None for a key means "by the cron rule"."""

    gap: str | None = None  # after | skip
    repeat: str | None = None  # first | second | both

    def __post_init__(self) -> None:
        for key in ("gap", "repeat"):
            problem = policy_problem(key, getattr(self, key))
            if problem:
                raise ValueError(f"dst.{key}: {problem}")

    def resolved(self, real_time: bool) -> DstPolicy:
        """Both keys filled in: what was given, else the rule's default for this schedule."""
        default = REAL_TIME if real_time else FIXED_TIME
        if self.gap is None and self.repeat is None:  # the usual case, asked at every next fire
            return default
        if self.gap is not None and self.repeat is not None:
            return self
        return _completed(self, default)

    def describe(self) -> str:
        return ", ".join(f"{k} {v}" for k, v in (("gap", self.gap), ("repeat", self.repeat)) if v)


@lru_cache(maxsize=64)
def _completed(policy: DstPolicy, default: DstPolicy) -> DstPolicy:
    return DstPolicy(policy.gap or default.gap, policy.repeat or default.repeat)


def policy_problem(key: str, value: object) -> str | None:
    """What is wrong with one key of a `dst` table (None: nothing)."""
    allowed = GAP_CHOICES if key == "gap" else REPEAT_CHOICES
    if value is None or value in allowed:
        return None
    return f"must be one of: {', '.join(allowed)}; got {value!r}"


FIXED_TIME = DstPolicy("after", "first")
REAL_TIME = DstPolicy("skip", "both")
BY_RULE = DstPolicy()


@lru_cache(maxsize=1024)
def zone(name: str) -> ZoneInfo:
    """The named IANA zone; ValueError for an unknown one."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, TypeError):
        raise ValueError(f"unknown time zone {name!r} (use an IANA name like Europe/Berlin)") \
            from None


def utc(naive: datetime) -> datetime:
    return naive.replace(tzinfo=UTC)


@lru_cache(maxsize=1024)
def transition(tz: ZoneInfo, before: datetime, after: datetime) -> datetime:
    """The first UTC instant with the new offset, between two instants that straddle it."""
    old = utc(before).astimezone(tz).utcoffset()
    while after - before > _SECOND:
        middle = before + (after - before) / 2
        middle = middle.replace(microsecond=0)
        if utc(middle).astimezone(tz).utcoffset() == old:
            before = middle
        else:
            after = middle
    return utc(after)


@dataclass(frozen=True, slots=True)
class Placement:
    """Where one wall time lands. `first` is the earliest instant it can fire at: its only
    occurrence, its first pass when repeated, or the end of the gap that skips it."""

    kind: str  # normal | gap | repeat
    first: datetime
    second: datetime | None = None  # a repeated wall time's second pass

    def instants(self, policy: DstPolicy) -> tuple[datetime, ...]:
        """The instants it fires at under a resolved policy (none, one or two)."""
        if self.kind == NORMAL:
            return (self.first,)
        if self.kind == GAP:
            return (self.first,) if policy.gap == "after" else ()
        if policy.repeat == "first":
            return (self.first,)
        if policy.repeat == "second":
            return (self.second,)
        return (self.first, self.second)


def locate(wall: datetime, tz: ZoneInfo) -> Placement:
    """Where a naive local wall time lands in tz. `first` never decreases as `wall` grows."""
    first = wall.replace(tzinfo=tz, fold=0).utcoffset()
    second = wall.replace(tzinfo=tz, fold=1).utcoffset()
    if first == second:
        return Placement(NORMAL, utc(wall - first))
    if first > second:  # repeated by fall-back: fold=0 is the earlier occurrence
        return Placement(REPEAT, utc(wall - first), utc(wall - second))
    return Placement(GAP, transition(tz, wall - second, wall - first))  # skipped


def resolve_wall(wall: datetime, tz: ZoneInfo) -> tuple[datetime, datetime | None]:
    """(first UTC instant of a local wall time, second instant if fall-back repeats it); a
    skipped wall time gives the end of its gap."""
    placed = locate(wall, tz)
    return placed.first, placed.second


def near_shift(t: datetime, tz: ZoneInfo) -> bool:
    """Whether tz changes its offset within NEAR of the instant t."""
    return (t - NEAR).astimezone(tz).utcoffset() != (t + NEAR).astimezone(tz).utcoffset()


@dataclass(frozen=True, slots=True)
class Shift:
    """One offset change: at `at` (UTC) the wall clock jumps from `wall_before` to `wall_after`
    (later for a gap, earlier for a repeat)."""

    at: datetime
    wall_before: datetime
    wall_after: datetime

    @property
    def is_gap(self) -> bool:
        return self.wall_after > self.wall_before


def shifts(tz: ZoneInfo, start: datetime, end: datetime) -> list[Shift]:
    """Every offset change of tz in (start, end], found by stepping a day at a time (no zone
    changes its offset twice in one day) and bisecting."""
    found = []
    step = timedelta(days=1)
    a = start
    while a < end:
        b = min(a + step, end)
        if a.astimezone(tz).utcoffset() != b.astimezone(tz).utcoffset():
            at = transition(tz, a.replace(tzinfo=None), b.replace(tzinfo=None))
            found.append(Shift(at, (at + (at - _SECOND).astimezone(tz).utcoffset()).replace(
                tzinfo=None), (at + at.astimezone(tz).utcoffset()).replace(tzinfo=None)))
        a = b
    return found
