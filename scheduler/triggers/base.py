"""What every trigger answers; `fires_between` is derived from `next_after`."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

MINUTE = timedelta(minutes=1)
DAY = timedelta(days=1)
HORIZON_DAYS = 366 * 28  # the Gregorian weekday/leap pattern repeats within 28 years


def aware(t: datetime) -> datetime:
    """t in UTC; a naive t is taken to be UTC already."""
    return t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC)


class BaseTrigger(ABC):
    @abstractmethod
    def next_after(self, t: datetime) -> datetime | None:
        """The first fire strictly after t (aware; answered in UTC), None if it never fires."""

    @abstractmethod
    def describe(self) -> str:
        """One line for people; also the schedule's identity in the ledger, so it stays the
        same for a definition that has not changed."""

    def fires_between(self, start: datetime, end: datetime) -> Iterator[datetime]:
        """Fire instants with start < fire <= end, in order, computed lazily."""
        end = aware(end)
        fire = self.next_after(start)
        while fire is not None and fire <= end:
            yield fire
            fire = self.next_after(fire)
