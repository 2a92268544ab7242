"""The typed Run: one attempt of a run as the ledger holds it.

The run states are defined once, in scheduler.protocol (the one module the scheduler and the
agent share): the scheduler's whole lifecycle, of which an agent's record takes only a part.
They are re-exported here beside the Run that carries them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from scheduler.protocol import (
    AGENT_STATES,
    CANCELLED,
    DISPATCHED,
    FAILED,
    FINAL_STATES,
    LOST,
    OPEN_STATES,
    RETRIED_STATES,
    RUNNING,
    SCHEDULED,
    STATES,
    SUCCEEDED,
    TIMED_OUT,
)

__all__ = ["AGENT_STATES", "CANCELLED", "DISPATCHED", "FAILED", "FINAL_STATES", "LOST",
           "OPEN_STATES", "RETRIED_STATES", "RUNNING", "RUN_FIELDS", "Run", "SCHEDULED",
           "STATES", "SUCCEEDED", "TIMED_OUT"]


@dataclass(frozen=True, slots=True)
class Run:
    """One attempt of a run. Times are ISO-8601 UTC text, as stored and as the API shows them
    (`nominal` to the second, as in the run id; the others to the microsecond)."""

    run_id: str
    attempt: int
    job: str
    nominal: str
    state: str = SCHEDULED
    agent: str | None = None
    epoch: int | None = None
    exit_code: int | None = None
    reason: str | None = None
    scheduled_at: str | None = None
    dispatched_at: str | None = None
    started_at: str | None = None
    finished_at: str | None = None
    output_path: str | None = None
    manual: bool = False
    stdout_dropped: int | None = None
    stderr_dropped: int | None = None

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Run:
        """A ledger row (SQLite stores `manual` as 0/1)."""
        values = {name: row[name] for name in RUN_FIELDS}
        values["manual"] = bool(values["manual"])
        return cls(**values)

    @property
    def key(self) -> tuple[str, int]:
        """(run_id, attempt): the identity an agent knows it by."""
        return self.run_id, self.attempt

    @property
    def planned(self) -> bool:
        """A fire of the job's schedule (not a manual run, not a retry)."""
        return not self.manual and self.attempt == 1

    def to_dict(self) -> dict[str, Any]:
        """The JSON view of the API (docs/interfaces.md, RUN of the REST API)."""
        return {name: getattr(self, name) for name in RUN_FIELDS}


RUN_FIELDS = tuple(f.name for f in fields(Run))


def output_rel(job: str, run_id: str, attempt: int) -> str:
    """Where the collector keeps a run's output, relative to the node's output directory:
    stored so in the ledger, it means the same on two nodes with different state dirs."""
    return f"{job}/{run_id}.{attempt}"


def output_base(output_dir: Path, output_path: str) -> Path:
    """The files' base path (BASE.stdout, BASE.stderr) of a run's `output_path` on this node;
    an absolute one (ledgers from before it was relative) is taken as it is."""
    path = Path(output_path)
    return path if path.is_absolute() else Path(output_dir) / path
