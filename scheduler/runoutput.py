"""A run's output as GET /v1/runs/{id}/output gives it: the file this node stored (the collector
on the active, the follower on a standby), else, while the run is on its agent, the agent's."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from pathlib import Path

from scheduler.protocol import AgentClient
from scheduler.runs import DISPATCHED, FINAL_STATES, RUNNING, Run, output_base
from scheduler.service import NotFound


async def read_output(row: Run | None, stream: str, output_dir: Path,
                      clients: Mapping[str, AgentClient]) -> str:
    """`stream` ("stdout" or "stderr") of the run `row` (None: NotFound, no such run)."""
    if row is None:
        raise NotFound("no such run")
    if row.output_path:
        base = output_base(output_dir, row.output_path)
        path = base.with_name(f"{base.name}.{stream}")
        if path.exists():
            return await asyncio.to_thread(path.read_text, errors="replace")
        if row.state in FINAL_STATES:
            return ""  # collected: a stream with no output is not written
    if row.state in (DISPATCHED, RUNNING) and row.agent in clients:
        try:  # a read, allowed to a standby too
            return await clients[row.agent].output(row.run_id, row.attempt, stream)
        except Exception as e:
            raise NotFound(f"output of {row.run_id} not available: {e}") from e
    raise NotFound(f"no output recorded for {row.run_id}")
