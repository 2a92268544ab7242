"""Fixed intervals (anchored in UTC, so DST does not touch them) and one-off local times."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from scheduler.calendars import Calendar
from scheduler.triggers.base import DAY, HORIZON_DAYS, BaseTrigger, aware
from scheduler.triggers.dst import BY_RULE, DstPolicy, locate, zone
from scheduler.units import format_duration


@dataclass(frozen=True)
class IntervalTrigger(BaseTrigger):
    """Fires at anchor + k * seconds, so every scheduler computes the same instants."""

    seconds: float
    tz: str = "UTC"
    anchor: datetime = datetime(1970, 1, 1, tzinfo=UTC)
    calendar: Calendar | None = None

    def next_after(self, t: datetime) -> datetime | None:
        step = timedelta(seconds=self.seconds)
        t = aware(t)
        for _ in range(HORIZON_DAYS):
            fire = self.anchor + max((t - self.anchor) // step + 1, 0) * step
            if self.calendar is None:
                return fire
            local = fire.astimezone(zone(self.tz))
            if self.calendar.allows(local.date()):
                return fire
            # Skip to the end of that local day, then take the next interval point.
            midnight = datetime.combine(local.date() + DAY, datetime.min.time())
            t = locate(midnight, zone(self.tz)).first - timedelta(microseconds=1)
        return None

    def describe(self) -> str:
        extra = f" ({self.tz}, calendar {self.calendar.name})" if self.calendar else ""
        return f"every {format_duration(self.seconds)}{extra}"


@dataclass(frozen=True)
class OnceTrigger(BaseTrigger):
    """A one-off local time. In a DST gap or repeat it follows its DstPolicy, by default the
    fixed-time rule (once, right after a gap; the first pass of a repeat)."""

    at: datetime  # naive: wall time in tz
    tz: str = "UTC"
    dst: DstPolicy = BY_RULE

    @property
    def policy(self) -> DstPolicy:
        return self.dst.resolved(real_time=False)  # a one-off time is a fixed time

    @property
    def instants(self) -> tuple[datetime, ...]:
        return locate(self.at, zone(self.tz)).instants(self.policy)

    def next_after(self, t: datetime) -> datetime | None:
        t = aware(t)
        return next((i for i in self.instants if i > t), None)

    def walls_after(self, wall: datetime) -> datetime | None:
        return self.at if self.at > wall else None

    def describe(self) -> str:
        extra = f", dst {self.dst.describe()}" if self.dst != BY_RULE else ""
        return f"once at {self.at.isoformat(timespec='minutes')} ({self.tz}{extra})"
