"""An in-process stand-in for AgentClient: the scheduler's parts tested without processes."""

from __future__ import annotations

from typing import Any

from scheduler.protocol import AgentError, AgentUnreachable, StaleEpoch, make_run


class FakeAgent:
    """Answers like an agent: `up` False makes every call unreachable; `epoch` is the highest
    epoch it has seen; `records` its runs (RUN objects of the agent API)."""

    def __init__(self, name: str, epoch: int = 0, up: bool = True,
                 knows_epoch_push: bool = True) -> None:
        self.name = name
        self.epoch = epoch
        self.up = up
        self.knows_epoch_push = knows_epoch_push
        self.records: list[dict[str, Any]] = []
        self.calls: list[str] = []
        self.outputs: dict[tuple[str, int, str], str] = {}  # (run_id, attempt, stream) -> text

    def _answer(self, call: str) -> None:
        self.calls.append(call)
        if not self.up:
            raise AgentUnreachable(f"agent {self.name}: connection refused")

    def add(self, run_id: str, job: str, state: str = "running", acked: bool = False,
            attempt: int = 1) -> None:
        self.records.append(make_run(run_id=run_id, job=job, attempt=attempt, epoch=self.epoch,
                                     state=state, started_at="2026-01-01T00:00:00.000000Z",
                                     acked=acked))

    async def health(self) -> dict[str, Any]:
        self._answer("health")
        return {"epoch": self.epoch}

    async def raise_epoch(self, epoch: int) -> int:
        self._answer("raise_epoch")
        if not self.knows_epoch_push:
            raise AgentError(f"agent {self.name}: HTTP 404", 404)
        if epoch < self.epoch:
            raise StaleEpoch(f"epoch {epoch} < {self.epoch}", self.epoch)
        self.epoch = epoch
        return epoch

    async def runs(self, *, unacked: bool = False, since: Any = None) -> list[dict[str, Any]]:
        self._answer("runs")
        return [r for r in self.records if not (unacked and r["acked"])]

    async def output(self, run_id: str, attempt: int, stream: str = "stdout") -> str:
        self._answer("output")
        text = self.outputs.get((run_id, attempt, stream))
        if text is None:
            raise AgentError(f"agent {self.name}: HTTP 404", 404)
        return text

    async def close(self) -> None:
        return None
