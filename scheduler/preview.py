"""A preview of fire times (`jobs next`, `jobs validate --next`, `jobs forecast`).

Each fire is given in the job's zone and in UTC, with a note when DST moved or dropped a wall
time, when a calendar excluded dates since the previous fire, or which business day it is. The
fire times themselves come from the trigger, exactly as the planner gets them; this module only
explains them (docs/semantics.md, "What fires when").
"""

from __future__ import annotations

import dataclasses
import heapq
from collections.abc import Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from scheduler.jobs import Job
from scheduler.times import nominal_iso
from scheduler.triggers import CronTrigger, IntervalTrigger, OnceTrigger, Trigger
from scheduler.triggers.base import DAY, MINUTE, aware
from scheduler.triggers.dst import REPEAT, locate, shifts, zone

_LISTED_DATES = 5  # excluded dates named in one note; more are counted


@dataclass(frozen=True)
class PlannedFire:
    at: datetime  # UTC
    local: datetime  # in the job's zone
    notes: tuple[str, ...] = ()

    def to_dict(self) -> dict:
        return {"utc": nominal_iso(self.at), "local": self.local.isoformat(timespec="seconds"),
                "zone": self.local.tzname(), "notes": list(self.notes)}


def preview(trigger: Trigger, start: datetime, count: int | None = None,
            end: datetime | None = None) -> list[PlannedFire]:
    """The fires after `start` (at most `count`, none after `end`), each with its notes."""
    start = aware(start)
    fires = []
    previous = start
    for fire in _fires(trigger, start, end):
        if count is not None and len(fires) >= count:
            break
        local = fire.astimezone(zone(trigger.tz))
        fires.append(PlannedFire(fire, local, tuple(notes(trigger, previous, fire))))
        previous = fire
    return fires


def _fires(trigger: Trigger, start: datetime, end: datetime | None) -> Iterator[datetime]:
    fire = trigger.next_after(start)
    while fire is not None and (end is None or fire <= aware(end)):
        yield fire
        fire = trigger.next_after(fire)


def notes(trigger: Trigger, previous: datetime, fire: datetime) -> list[str]:
    """Why the fire at `fire` (the one after `previous`) is where it is, for people."""
    found: list[str] = []
    if isinstance(trigger, CronTrigger | OnceTrigger):
        found += _dst_notes(trigger, previous, fire)
    if isinstance(trigger, CronTrigger) and trigger.business_day:
        found.append(_business_note(trigger, fire))
    elif isinstance(trigger, CronTrigger | IntervalTrigger) and trigger.calendar is not None:
        found += _calendar_notes(trigger, previous, fire)
    return found


def _hhmm(walls: list[datetime]) -> str:
    return ", ".join(w.strftime("%H:%M") for w in walls)


def _dst_notes(trigger: CronTrigger | OnceTrigger, previous: datetime,
               fire: datetime) -> list[str]:
    tz = zone(trigger.tz)
    policy = trigger.policy
    found = []
    for shift in shifts(tz, previous, fire):
        if not shift.is_gap:
            continue
        skipped, wall = [], shift.wall_before - MINUTE
        while (wall := trigger.walls_after(wall)) is not None and wall < shift.wall_after:
            skipped.append(wall)
        if not skipped:
            continue
        day = skipped[0].date().isoformat()
        verb = "does not exist" if len(skipped) == 1 else "do not exist"
        if policy.gap == "after" and shift.at == fire:
            runs = shift.wall_after.strftime("%H:%M")
            found.append(f"{_hhmm(skipped)} {verb} on {day} -> runs {runs}"
                         + (" (once)" if len(skipped) > 1 else ""))
        elif policy.gap == "skip":
            found.append(f"{_hhmm(skipped)} {verb} on {day} (clocks jump from "
                         f"{shift.wall_before:%H:%M} to {shift.wall_after:%H:%M}) -> skipped")
    wall = fire.astimezone(tz).replace(tzinfo=None)
    placed = locate(wall, tz)
    if placed.kind == REPEAT:
        first = placed.first.astimezone(tz).tzname()
        second = placed.second.astimezone(tz).tzname()
        which = "first" if fire == placed.first else "second"
        head = f"{wall:%H:%M} happens twice on {wall.date().isoformat()} ({first}, then {second})"
        if policy.repeat == "both":
            found.append(f"{head} -> runs at both; this is the {which}")
        else:
            found.append(f"{head} -> runs at the {which} only")
    return found


def _calendar_notes(trigger: CronTrigger | IntervalTrigger, previous: datetime,
                    fire: datetime) -> list[str]:
    """Dates the schedule alone would have fired on since `previous`, that the calendar
    excluded: the trigger without its calendar is walked a local day at a time."""
    calendar = trigger.calendar
    tz = zone(trigger.tz)
    bare = dataclasses.replace(trigger, calendar=None)
    by_calendar: dict[str, list[date]] = {}
    t = previous
    while (candidate := bare.next_after(t)) is not None and candidate < fire:
        day = candidate.astimezone(tz).date()
        name = calendar.excluded_by(day)
        if name is not None:
            by_calendar.setdefault(name, []).append(day)
        midnight = datetime.combine(day + DAY, datetime.min.time())
        t = max(locate(midnight, tz).first - timedelta(microseconds=1), candidate)
    return [f"skipped {_dates(days)}: excluded by calendar {name}"
            for name, days in by_calendar.items()]


def _dates(days: list[date]) -> str:
    text = ", ".join(d.isoformat() for d in days[:_LISTED_DATES])
    more = len(days) - _LISTED_DATES
    return text + (f" and {more} more" if more > 0 else "")


def _business_note(trigger: CronTrigger, fire: datetime) -> str:
    from scheduler.calendars import MON_FRI, business_days

    day = fire.astimezone(zone(trigger.tz)).date()
    days = business_days(trigger.calendar, day.year, day.month)
    n = days.index(day.day) + 1 if day.day in days else 0
    text = f"business day {n} of {day:%Y-%m}" + (f" (the last, {n - len(days) - 1})"
                                                    if n == len(days) else "")
    if trigger.calendar is None:
        return text
    excluded: dict[str, list[date]] = {}
    for d in range(1, 32):
        try:
            other = date(day.year, day.month, d)
        except ValueError:
            break
        name = trigger.calendar.excluded_by(other) if other.weekday() in MON_FRI else None
        if name is not None:
            excluded.setdefault(name, []).append(other)
    for name, dates in excluded.items():
        text += f"; not counted: {_dates(dates)} (excluded by calendar {name})"
    return text


def never_fires(trigger: Trigger, now: datetime) -> str | None:
    """A warning when a trigger will not fire again after `now`, else None."""
    if trigger.next_after(now) is not None:
        return None
    if isinstance(trigger, OnceTrigger):
        return (f"at {trigger.at.isoformat(timespec='minutes')} ({trigger.tz}) is in the past: "
                "it will not fire")
    return f"{trigger.describe()} never fires (no fire in the next 28 years)"


def forecast(jobs: Iterable[Job], start: datetime, end: datetime,
             limit: int) -> tuple[list[tuple[Job, PlannedFire]], bool]:
    """Every fire of every job in (start, end], in time order (then by job name), at most
    `limit`; and whether more were left out."""
    start, end = aware(start), aware(end)
    def stream(job: Job) -> Iterator[tuple[datetime, str, Job]]:
        for fire in _fires(job.trigger, start, end):
            yield fire, job.name, job

    merged = heapq.merge(*(stream(job) for job in jobs), key=lambda item: (item[0], item[1]))
    chosen = []
    for fire, _name, job in merged:
        if len(chosen) >= limit:
            return _explained(chosen, start), True
        chosen.append((job, fire))
    return _explained(chosen, start), False


def _explained(chosen: list[tuple[Job, datetime]], start: datetime
               ) -> list[tuple[Job, PlannedFire]]:
    previous: dict[str, datetime] = {}
    out = []
    for job, fire in chosen:
        local = fire.astimezone(zone(job.trigger.tz))
        note = notes(job.trigger, previous.get(job.name, start), fire)
        out.append((job, PlannedFire(fire, local, tuple(note))))
        previous[job.name] = fire
    return out


def next_view(job: Job, start: datetime, count: int, paused: bool = False) -> dict[str, Any]:
    """The `next` answer for one job (API and offline validate): its next `count` fires."""
    fires = preview(job.trigger, start, count=count)
    view = {"job": job.name, "trigger": job.trigger.describe(), "timezone": job.trigger.tz,
            "from": nominal_iso(aware(start)), "paused": paused,
            "fires": [f.to_dict() for f in fires]}
    warning = None if fires else never_fires(job.trigger, start)
    if warning:
        view["warning"] = warning
    return view


def forecast_view(jobs: Mapping[str, Job], start: datetime, end: datetime, limit: int,
                  paused: Collection[str] = ()) -> dict[str, Any]:
    """The `forecast` answer: every job's fires in (start, end], paused ones marked."""
    chosen, truncated = forecast(jobs.values(), start, end, limit)
    fires = []
    for job, fire in chosen:
        row = {"job": job.name, "timezone": job.trigger.tz, **fire.to_dict()}
        row["paused"] = job.name in paused
        fires.append(row)
    return {"from": nominal_iso(aware(start)), "to": nominal_iso(aware(end)),
            "truncated": truncated, "fires": fires}
