"""Collecting from agents: progress and results into the ledger, output kept, then the ack.

Order of durability (docs/semantics.md, "Failover"): a run's final state is in the ledger before
its agent is told it may forget it (ack).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from scheduler.adopt import adoption, correction, result_fields
from scheduler.agents import AgentPool
from scheduler.dispatch import StaleHook, observe_lateness
from scheduler.ledger import BatchWriter, Change, Ledger, utc_iso
from scheduler.protocol import AgentClient, AgentError, AgentUnreachable, StaleEpoch
from scheduler.runs import (
    DISPATCHED,
    FINAL_STATES,
    LOST,
    OPEN_STATES,
    RUNNING,
    SCHEDULED,
    Run,
    output_base,
    output_rel,
)
from scheduler.statedir import write_private_files

log = logging.getLogger("hasched.dispatch")

FinalHook = Callable[[Run], Awaitable[None]]
EpochTold = Callable[[str], Awaitable[bool]]

# How long a collect pass waits for each agent (all at once). An agent that has not answered by
# then (stopped, its node dead, overloaded) is left to finish in the background, and skipped by
# the passes that follow until it has: the others are collected every pass (a pass waited for
# the slowest agent: 3 s a pass behind a SIGSTOPped one). A live agent answers in milliseconds.
COLLECT_WAIT = 1.0


class Collector:
    def __init__(self, ledger: Ledger, writer: BatchWriter, pool: AgentPool, output_dir: Path,  # noqa: PLR0913 - its collaborators, given by daemon.py, which wires the parts
                 epoch: Callable[[], int], tell: EpochTold, on_stale: StaleHook,
                 on_final: FinalHook, metrics: Any = None, wait: float = COLLECT_WAIT) -> None:
        """`tell(agent)` makes sure the agent holds our epoch before it is asked anything (the
        term's job: False when it does not answer); `on_final` follows a run's final state
        (retries)."""
        self.ledger, self.writer, self.pool = ledger, writer, pool
        self.output_dir = Path(output_dir)
        self.epoch, self.tell, self.on_stale, self.on_final = epoch, tell, on_stale, on_final
        self.metrics, self.wait = metrics, wait
        self._finishing: set[tuple[str, int]] = set()
        self._agents: dict[str, asyncio.Task[None]] = {}  # a collection per agent at most

    async def collect(self) -> None:
        """One pass over every agent: record progress and results, then acknowledge. Waits up
        to `wait` for the agents that answered last time; one already found unreachable is
        asked in the background, one still busy from an earlier pass is skipped until done."""
        waited = []
        for agent in self.pool.clients:
            if agent in self._agents:
                log.debug("collect pass: agent %s still busy from an earlier pass; skipped",
                          agent)
                continue
            task = asyncio.get_running_loop().create_task(self._collect_agent(agent))
            self._agents[agent] = task
            task.add_done_callback(self._collected)
            if self.pool.reachable.get(agent):
                waited.append(task)
            else:
                log.debug("collect pass: agent %s unreachable; asked without waiting", agent)
        if waited:
            await asyncio.wait(waited, timeout=self.wait)
        self.pool.recount(self.ledger.open_runs())

    def _collected(self, task: asyncio.Task[None]) -> None:
        for agent, t in list(self._agents.items()):
            if t is task:
                del self._agents[agent]
                if not task.cancelled() and task.exception() is not None:
                    log.error("collecting from %s failed: %s", agent, task.exception())

    def in_flight(self) -> list[asyncio.Task[None]]:
        """The collections still going on (cancelled with the work of the term)."""
        return list(self._agents.values())

    async def _collect_agent(self, agent: str) -> None:
        client = self.pool.client(agent)
        poll_start = utc_iso()
        try:
            if not await self.tell(agent):
                return
            records = await client.runs(unacked=True)
        except StaleEpoch as e:
            self.on_stale(agent, e)
            return
        except (AgentUnreachable, AgentError) as e:
            self.pool.mark(agent, False, str(e))
            return
        self.pool.mark(agent, True)
        seen = {(record["run_id"], int(record["attempt"])) for record in records}
        # All of them at once: their ledger writes share the BatchWriter's transactions and
        # their acks go out together. One by one, a pass over a burst's runs took a transaction
        # and round trips per run, and the ledger learnt of starts seconds late.
        await asyncio.gather(*(self._collect_record(agent, record) for record in records))
        # Runs we hold as open on this agent that it did not list as unacknowledged: lost, or
        # acknowledged by another scheduler. Not those sent during this pass.
        for run in self.ledger.open_runs():
            if (run.agent != agent or run.state == SCHEDULED or run.key in seen
                    or (run.dispatched_at or "") >= poll_start):
                continue
            try:
                record = await client.run(*run.key)
            except (AgentUnreachable, AgentError) as e:
                self.pool.mark(agent, False, str(e))
                return
            if record is None:
                await self._final(run, {"state": LOST, "finished_at": utc_iso(),
                                        "reason": f"agent {agent} does not know this run"})
            elif record.get("acked") and record["state"] in FINAL_STATES:
                # Collected and acknowledged by another scheduler (failover): take its result.
                await self._final(run, result_fields(record))

    async def _collect_record(self, agent: str, record: dict[str, Any]) -> None:
        key = (record["run_id"], int(record["attempt"]))
        run = self.ledger.get_attempt(*key)
        if run is None:
            await self.writer.write([adoption(agent, record, final=False)])
            run = self.ledger.get_attempt(*key)
        elif change := correction(agent, record, run):  # ended here, yet it ran there
            if (await self.writer.write([change]))[0]:
                log.warning("run %s attempt %s: %s", *key, change.fields["reason"])
            run = self.ledger.get_attempt(*key)
        if record["state"] in FINAL_STATES:
            await self.finish(agent, record)
        elif run and run.state in (SCHEDULED, DISPATCHED):
            await self.writer.write([Change("update", *key, fields={
                "state": RUNNING, "agent": agent, "started_at": record.get("started_at")},
                when=(SCHEDULED, DISPATCHED))])
        elif run and run.state == RUNNING and not run.started_at \
                and record.get("started_at"):  # sent ahead, started since
            await self.writer.write([Change("update", *key, fields={
                "started_at": record["started_at"]}, when=(RUNNING,))])
            observe_lateness(self.metrics, run, record)

    async def _final(self, run: Run, fields: dict[str, Any]) -> bool:
        done = await self.writer.write([Change("update", run.run_id, run.attempt,
                                               fields=fields, when=OPEN_STATES)])
        if done[0]:
            if self.metrics is not None:
                self.metrics.count_run(fields["state"])
            log.info("run %s attempt %s %s%s", run.run_id, run.attempt, fields["state"],
                     f": {fields['reason']}" if fields.get("reason") else "")
            final = self.ledger.get_attempt(run.run_id, run.attempt)
            if final:
                await self.on_final(final)
        return done[0]

    async def finish(self, agent: str, record: dict[str, Any]) -> None:
        """Fetch the output, record the result durably, THEN acknowledge."""
        key = (record["run_id"], int(record["attempt"]))
        if key in self._finishing:
            return
        self._finishing.add(key)
        try:
            client = self.pool.client(agent)
            run = self.ledger.get_attempt(*key)
            if run is None:
                return
            fields = {**result_fields(record), "agent": agent}  # a held run has none yet
            if not fields["reason"] and run.state == RUNNING:
                fields["reason"] = run.reason  # a correction's note (adopt.correction)
            if run.state not in FINAL_STATES or not run.output_path:
                rel = output_rel(record["job"], record["run_id"], key[1])
                await self._save_output(client, key, self.output_dir / rel,
                                        record.get("output") or {})
                fields["output_path"] = rel
            if run.state not in FINAL_STATES:
                if not run.started_at:
                    observe_lateness(self.metrics, run, record)
                await self._final(run, fields)
            elif not run.output_path:
                await self.writer.write([Change("update", *key,
                                                fields={"output_path": fields["output_path"]})])
            await client.ack(*key, self.epoch())
        except StaleEpoch as e:
            self.on_stale(agent, e)
        except (AgentUnreachable, AgentError) as e:
            log.warning("collecting %s attempt %s from %s: %s", key[0], key[1], agent, e)
        finally:
            self._finishing.discard(key)

    async def recover_output(self, keys: list[tuple[str, int]]) -> int:
        """Fetch from their agents the kept output of collected runs this node lacks (a
        promoted standby whose follower had not mirrored them yet); how many were written.
        An agent that does not answer costs its connect timeout, once per run."""
        done = 0
        for key in keys:
            run = self.ledger.get_attempt(*key)
            if run is None or not run.output_path or not run.agent:
                continue
            try:
                client = self.pool.client(run.agent)
                await self._save_output(client, key, output_base(self.output_dir,
                                                                 run.output_path), {})
                done += 1
            except (KeyError, AgentUnreachable) as e:
                log.warning("output of %s attempt %d not recovered from %s: %s", key[0],
                            key[1], run.agent, e)
        return done

    async def _save_output(self, client: AgentClient, key: tuple[str, int], base: Path,
                           sizes: dict[str, Any]) -> None:
        """BASE.stdout and BASE.stderr, each stream that has any output; an empty one is
        neither asked of the agent nor written (the daemon reads a missing file of a collected
        run as empty): most runs write nothing to one stream or both, and each request, file
        and thread hop is a turn of the loops while a burst is starting (bench/lateness.py)."""
        texts: dict[Path, str] = {}
        for stream in ("stdout", "stderr"):
            if sizes.get(stream) == 0 and not (sizes.get("dropped") or {}).get(stream):
                continue
            try:
                text = await client.output(*key, stream=stream)
            except AgentError as e:
                text = f"[hasched: output not available: {e}]\n"
            texts[base.with_name(f"{base.name}.{stream}")] = text
        if texts:
            await asyncio.to_thread(write_private_files, base.parent, texts,
                                    "run output directory")
