"""An in-process stand-in for AgentClient: the scheduler's parts tested without processes."""

from __future__ import annotations

import asyncio
from typing import Any

from scheduler.protocol import AgentError, AgentUnreachable, StaleEpoch, make_run


class FakeAgent:
    """Answers like an agent: `up` False makes every call unreachable; `stopped` True makes
    every call hang like a SIGSTOPped agent's (until the call's `timeout`, then unreachable, as
    AgentClient does; with no timeout until `stopped` is False again); `epoch` is the highest
    epoch it has seen; `records` its runs (RUN objects of the agent API)."""

    def __init__(self, name: str, epoch: int = 0, up: bool = True,
                 knows_epoch_push: bool = True) -> None:
        self.name = name
        self.epoch = epoch
        self.up = up
        self.knows_epoch_push = knows_epoch_push
        self.records: list[dict[str, Any]] = []
        self.calls: list[str] = []
        self.acked: list[tuple[str, int]] = []
        self.stopped = False
        self.outputs: dict[tuple[str, int, str], str] = {}  # (run_id, attempt, stream) -> text

    async def _answer(self, call: str, timeout: float | None = None) -> None:
        self.calls.append(call)
        if self.stopped:
            if timeout is not None:
                await asyncio.sleep(timeout)
                raise AgentUnreachable(f"agent {self.name}: no answer within {timeout:g}s")
            while self.stopped:
                await asyncio.sleep(0.01)
        if not self.up:
            raise AgentUnreachable(f"agent {self.name}: connection refused")

    def add(self, run_id: str, job: str, state: str = "running", acked: bool = False,
            attempt: int = 1, **fields: Any) -> None:
        fields = {"started_at": "2026-01-01T00:00:00.000000Z", **fields}
        self.records.append(make_run(run_id=run_id, job=job, attempt=attempt, epoch=self.epoch,
                                     state=state, acked=acked, **fields))

    async def health(self, timeout: float | None = None) -> dict[str, Any]:
        await self._answer("health", timeout)
        return {"epoch": self.epoch}

    async def raise_epoch(self, epoch: int, timeout: float | None = None) -> int:
        await self._answer("raise_epoch", timeout)
        if not self.knows_epoch_push:
            raise AgentError(f"agent {self.name}: HTTP 404", 404)
        if epoch < self.epoch:
            raise StaleEpoch(f"epoch {epoch} < {self.epoch}", self.epoch)
        self.epoch = epoch
        return epoch

    async def runs(self, *, unacked: bool = False, since: Any = None,
                   timeout: float | None = None) -> list[dict[str, Any]]:
        await self._answer("runs", timeout)
        return [r for r in self.records if not (unacked and r["acked"])]

    async def run(self, run_id: str, attempt: int) -> dict[str, Any] | None:
        await self._answer("run")
        return next((r for r in self.records
                     if (r["run_id"], r["attempt"]) == (run_id, attempt)), None)

    async def output(self, run_id: str, attempt: int, stream: str = "stdout") -> str:
        await self._answer("output")
        text = self.outputs.get((run_id, attempt, stream))
        if text is None:
            raise AgentError(f"agent {self.name}: HTTP 404", 404)
        return text

    async def ack(self, run_id: str, attempt: int, epoch: int) -> None:
        await self._answer("ack")
        self.acked.append((run_id, attempt))
        for r in self.records:
            if (r["run_id"], r["attempt"]) == (run_id, attempt):
                r["acked"] = True

    async def close(self) -> None:
        return None
