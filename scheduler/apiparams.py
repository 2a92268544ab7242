"""The REST API's query parameters: each read and checked, or refused with a BadParam whose
one-line message names the parameter and what it takes (the API answers it with a 400)."""

from __future__ import annotations

from datetime import datetime

from scheduler.ledger import STATES as LEDGER_STATES
from scheduler.protocol import STREAMS
from scheduler.times import nominal_iso, parse_time

# The ledger owns the list of run states; the API only checks a filter against it.
RUN_STATES = frozenset(LEDGER_STATES)
MAX_LIMIT = 10_000
MAX_COUNT = 1000  # fires of one job's preview
MAX_FORECAST = 10_000  # fires of one forecast


class BadParam(ValueError):
    """A query parameter that cannot be used; the message names it."""


def iso_param(name: str, value: str | None) -> str | None:
    when = when_param(name, value)
    return nominal_iso(when) if when is not None else None


def when_param(name: str, value: str | None) -> datetime | None:
    if value is None or value == "":
        return None
    try:
        return parse_time(value)
    except ValueError:
        raise BadParam(
            f"query parameter {name!r}: not an ISO-8601 time: {value!r} "
            "(e.g. 2026-12-01T01:30:00Z)"
        ) from None


def int_param(name: str, value: str | None, default: int, most: int) -> int:
    if value is None or value == "":
        return default
    try:
        number = int(value)
    except ValueError:
        raise BadParam(f"query parameter {name!r}: not an integer: {value!r}") from None
    if not 1 <= number <= most:
        raise BadParam(f"query parameter {name!r}: must be between 1 and {most}, got {number}")
    return number


def limit_param(value: str | None, default: int = 100, most: int = MAX_LIMIT) -> int:
    return int_param("limit", value, default, most)


def time_param(name: str, value: str | None, default: datetime | None = None) -> datetime:
    when = when_param(name, value)
    if when is None:
        if default is None:
            raise BadParam(f"query parameter {name!r} is required (an ISO-8601 time)")
        return default
    return when.replace(microsecond=0)


def state_param(value: str | None) -> str | None:
    if value is None or value == "":
        return None
    if value not in RUN_STATES:
        raise BadParam(
            f"query parameter 'state': unknown state {value!r} "
            f"(one of {', '.join(sorted(RUN_STATES))})"
        )
    return value


def stream_param(value: str | None) -> str:
    stream = value or "stdout"
    if stream not in STREAMS:
        raise BadParam(f"query parameter 'stream': must be stdout or stderr, got {stream!r}")
    return stream
