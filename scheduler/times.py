"""Timestamps as hasched writes and reads them: in UTC, with a trailing Z.

The one definition for the scheduler, the agent, the CLI and the run supervisor. Standard
library only: the supervisor imports this and none of the agent's code.
"""

from __future__ import annotations

import time
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


def log_stamp(created: float | None = None) -> str:
    """The time at the start of a log line (`created`: a time.time(), now without it): ISO
    8601 UTC to the millisecond, so that a scheduler.log lines up with Pacemaker's log and the
    other nodes' after a failover."""
    created = time.time() if created is None else created
    return (f"{time.strftime('%Y-%m-%dT%H:%M:%S', time.gmtime(created))}."
            f"{int(created * 1000) % 1000:03d}Z")


def log_line(level: str, name: str, message: str) -> str:
    """A line in the daemons' log format (scheduler.logs), for a process with no logging of
    its own: a run's supervisor, whose stderr is the agent's log."""
    return f"{log_stamp()} {level} {name}: {message}"
