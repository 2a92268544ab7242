"""When a job fires: cron expressions, fixed intervals and one-off times, in a job's time zone.

One module per concern: cronspec (parsing cron), cron (matching and placing cron fires), dst
(wall time to UTC across offset changes), simple (intervals, one-off times). What fires when is
documented in docs/semantics.md, "What fires when".
"""

from __future__ import annotations

from datetime import datetime
from functools import lru_cache

from scheduler.calendars import Calendar
from scheduler.triggers.cron import CronTrigger
from scheduler.triggers.cronspec import CronSpec, parse_cron
from scheduler.triggers.dst import BY_RULE, DstPolicy, locate, resolve_wall, zone
from scheduler.triggers.simple import IntervalTrigger, OnceTrigger
from scheduler.units import parse_duration

__all__ = ["CronSpec", "CronTrigger", "DstPolicy", "IntervalTrigger", "OnceTrigger", "Trigger",
           "locate", "make_trigger", "parse_cron", "resolve_wall", "zone"]

Trigger = CronTrigger | IntervalTrigger | OnceTrigger


@lru_cache(maxsize=65536)  # identical definitions share one trigger (and its caches)
def make_trigger(  # noqa: PLR0913 - one keyword per trigger field of a job file, all cached on
    schedule: str | None = None, every: str | int | float | None = None,
    at: str | datetime | None = None, timezone: str = "UTC",
    calendar: Calendar | None = None, dst: DstPolicy = BY_RULE,
    business_day: tuple[int, ...] = (),
) -> Trigger:
    """Build the trigger for exactly one of schedule | every | at; ValueError when wrong."""
    given = [k for k, v in (("schedule", schedule), ("every", every), ("at", at)) if v is not None]
    if len(given) != 1:
        raise ValueError("give exactly one of schedule, every, at"
                         + (f" (got {', '.join(given)})" if given else ""))
    if not isinstance(timezone, str):
        raise ValueError(f"unknown time zone {timezone!r} (use an IANA name like Europe/Berlin)")
    zone(timezone)
    if business_day and schedule is None:
        raise ValueError("business_day needs a schedule (a cron expression such as \"0 8 * * *\")")
    if schedule is not None:
        if not isinstance(schedule, str):
            raise ValueError(f"not a cron expression: {schedule!r}")
        return CronTrigger(schedule, timezone, calendar, dst, business_day)
    if every is not None:
        if dst != BY_RULE:
            raise ValueError("dst applies to schedule and at; an interval counts real time")
        seconds = parse_duration(every)
        if seconds < 1:
            raise ValueError(f"interval {every!r} is shorter than 1s")
        return IntervalTrigger(seconds, timezone, calendar=calendar)
    return _once(at, timezone, dst)


def _once(at: str | datetime | None, timezone: str, dst: DstPolicy) -> OnceTrigger:
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
    return OnceTrigger(at, timezone, dst)
