"""How far behind its fires the scheduler is: the age of the oldest fire that is due and not
known to have started. Past capacity (more fires than the machine can start processes for,
agents that do not answer) nothing is dropped: fires wait and start late, oldest first; this is
the figure that says so, in /health (`behind_seconds`, `overloaded`) and /metrics
(`hasched_behind_seconds`).

Pure: the daemon hands it the plan's next fire and the ledger's open runs. A fire counts from
its due time (nominal; a retry's scheduled_at) until the scheduler learns that its agent started
it: for a run sent ahead that is the next collection pass, so a healthy scheduler reads up to
about a collection period (1 s) behind right after a burst. Runs waiting for their dependencies
are not behind: they wait by design.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from typing import Any

OVERLOAD_AFTER = 10.0  # seconds behind from which /health says "overloaded"
WAITING_STATES = frozenset({"scheduled", "dispatched", "running"})


def _field(run: Any, name: str) -> Any:
    """A ledger row's field: rows are mappings, or typed runs with attributes."""
    return run[name] if isinstance(run, Mapping) else getattr(run, name)


def behind_seconds(now: datetime, plan_next: datetime | None, rows: Iterable[Any],
                   jobs: Mapping[str, Any], parse: Callable[[str], datetime]) -> float:
    """Seconds since the oldest fire that is due and not started (0.0 when none is).

    plan_next: the earliest fire not yet recorded (the planning loop's own lag); rows: the
    ledger's open runs, oldest first."""
    oldest = plan_next if plan_next is not None and plan_next < now else None
    for r in rows:
        state = _field(r, "state")
        if state not in WAITING_STATES or _field(r, "started_at"):
            continue
        job = jobs.get(_field(r, "job"))
        if state == "scheduled" and job is not None and getattr(job, "after", None):
            continue  # waiting for its dependencies
        retry_at = _field(r, "scheduled_at") if _field(r, "attempt") > 1 else None
        # A first attempt is due at its nominal time (a manual run's is when it was asked
        # for); a retry at its scheduled_at (the ledger sets that to the creation time of
        # every other run, which would hide how late the planning loop recorded it).
        due = parse(retry_at or _field(r, "nominal"))
        if due < now and (oldest is None or due < oldest):
            oldest = due
    return max(0.0, (now - oldest).total_seconds()) if oldest is not None else 0.0


def overloaded(behind: float, after: float = OVERLOAD_AFTER) -> bool:
    return behind > after
