"""Timestamps as hasched writes and reads them: in UTC, with a trailing Z.

The one definition for the scheduler, the agent, the CLI and the run supervisor. Standard
library only: the supervisor imports this and none of the agent's code.
"""

from __future__ import annotations

from datetime import UTC, datetime

# Ledger and agent timestamps: to the microsecond, so that `since=` can be exact.
STAMP = "%Y-%m-%dT%H:%M:%S.%fZ"
# Nominal fire times, as in run ids: whole seconds.
NOMINAL = "%Y-%m-%dT%H:%M:%SZ"


def utc_now() -> datetime:
    return datetime.now(UTC)


def utc_iso(t: datetime | None = None) -> str:
    """A timestamp (now, without `t`) as the ledger and the agent store it."""
    return (t or utc_now()).astimezone(UTC).strftime(STAMP)


def nominal_iso(t: datetime) -> str:
    """A nominal fire time as in run ids: UTC, whole seconds."""
    return t.astimezone(UTC).strftime(NOMINAL)


def parse_time(text: str) -> datetime:
    """Any ISO-8601 time (a 'Z' suffix too), in UTC; a time without a zone is taken as UTC.
    ValueError, one line naming the text, for anything else."""
    try:
        t = datetime.fromisoformat(text.strip())
    except (ValueError, AttributeError, TypeError):
        raise ValueError(f"not an ISO-8601 time: {text!r}") from None
    return t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC)
