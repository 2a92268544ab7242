"""The face the scheduler daemon shows to its front ends (REST API, metrics, control socket).

The daemon (`daemon.py`) implements it; `api.py` and `control.py` depend only on this
Protocol, so they can be tested against a small fake and never reach into the planner or ledger.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from scheduler.audit import Actor


class NotFound(LookupError):
    """No such job or run."""


class NotActive(RuntimeError):
    """The scheduler is standby: it accepts no orders that would start work."""


class Conflict(RuntimeError):
    """The order contradicts a job's policy (e.g. a manual run of a concurrency=forbid job while
    one of its runs is unfinished); the message says why, in one line."""


class Service(Protocol):
    # -- identity and health -------------------------------------------------
    def health(self) -> dict[str, Any]:
        """{"role","epoch","version","state_store","jobs","behind_seconds","overloaded"} as in
        docs/interfaces.md."""

    def status(self) -> dict[str, Any]:
        """The control socket's `status` answer (without "ok")."""

    def check(self) -> dict[str, Any]:
        """Deep self-check: {"state_store": "ok"|"error: ...", "jobs": n, "job_errors": [...]}."""

    # -- roles (control socket) ---------------------------------------------
    async def promote(self, epoch: int) -> dict[str, Any]: ...

    async def demote(self) -> dict[str, Any]: ...

    async def reload(self) -> dict[str, Any]:
        """Re-read job files; {"jobs": n, "errors": ["file:line: field: msg", ...]}."""

    def set_log_level(self, level: str) -> None: ...

    # -- jobs ------------------------------------------------------------------
    def job_listing(self) -> Iterator[str]:
        """The JSON text of GET /v1/jobs, {"jobs": [every job's view], "definitions":
        definitions()}, in pieces (the API yields to the event loop between them)."""

    def definitions(self) -> dict[str, Any]:
        """{"stale": False} when the jobs in force are those of the files; else also
        "failed_at" and "errors" of the last failed reload."""

    def get_job(self, name: str) -> dict[str, Any]:
        """Raises NotFound."""

    # The calls that change something take `by`, who asks (recorded in the audit trail with
    # what was done, in the same ledger transaction); None: no one named (in-process callers).
    async def run_now(self, name: str, by: Actor | None = None) -> dict[str, Any]:
        """Creates a manual run; returns its ledger row. Raises NotFound, NotActive, Conflict."""

    async def pause(self, name: str, by: Actor | None = None) -> dict[str, Any]: ...

    def next_fires(self, name: str, count: int, start: datetime) -> dict[str, Any]:
        """The job's next `count` fires after `start` with their notes (preview.next_view).
        Raises NotFound."""

    async def forecast(self, start: datetime, end: datetime, limit: int) -> dict[str, Any]:
        """Every job's fires in (start, end], at most `limit` (preview.forecast_view)."""

    async def resume(self, name: str, by: Actor | None = None) -> dict[str, Any]: ...

    # -- runs ------------------------------------------------------------------
    def list_runs(
        self,
        job: str | None = None,
        state: str | None = None,
        since: str | None = None,
        until: str | None = None,
        limit: int = 100,
    ) -> list[dict[str, Any]]: ...

    def get_run(self, run_id: str) -> dict[str, Any]:
        """Raises NotFound."""

    async def run_output(self, run_id: str, stream: str = "stdout") -> str:
        """Raises NotFound."""

    async def cancel(self, run_id: str, by: Actor | None = None) -> dict[str, Any]:
        """End a run's latest attempt: one not sent yet is cancelled in the ledger ("outcome":
        "cancelled"), one at its agent is ended there (TERM, then KILL of all its processes;
        "outcome": "requested": the run ends cancelled once collected). {"run": view,
        "outcome": ...}. Raises NotFound, NotActive, Conflict (already ended; agent
        unreachable)."""

    # -- audit trail ---------------------------------------------------------------
    def audit(self, job: str | None = None, since: str | None = None,
              limit: int = 100) -> list[dict[str, Any]]:
        """Audit entries (scheduler.audit), newest first."""
