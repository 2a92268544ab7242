"""Talking to agents: pick one, dispatch with the epoch, collect results, acknowledge, adopt.

Order of durability (scheduling-semantics rule 4): a run is in the ledger before it is sent, and
its final state is in the ledger before the agent is told it may forget it (ack).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from scheduler.ledger import FINAL_STATES, BatchWriter, Change, Ledger, utc_iso
from scheduler.planner import nominal_of
from scheduler.protocol import (
    AgentClient,
    AgentError,
    AgentUnreachable,
    DispatchOrder,
    StaleEpoch,
    parse_iso,
)
from scheduler.secretenv import SecretError, read_secret_env
from scheduler.statedir import private_dir, write_private

log = logging.getLogger("hasched.dispatch")

ADOPT_WINDOW = timedelta(days=7)  # the agents' record retention
PUSH_TIMEOUT = 3.0  # telling an agent a new epoch: short, a promotion waits for it

FinalHook = Callable[[dict[str, Any]], Awaitable[None]]
StaleHook = Callable[[str, StaleEpoch], None]


def command_of(job: Any) -> list[str]:
    cmd = job.command
    return ["/bin/sh", "-c", cmd] if isinstance(cmd, str) else list(cmd)


def _seconds(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, timedelta):
        return value.total_seconds()
    return float(value)


class Dispatcher:
    def __init__(self, ledger: Ledger, writer: BatchWriter, clients: dict[str, AgentClient],
                 labels: dict[str, list[str]], state_dir: Path, metrics: Any,
                 epoch: Callable[[], int], on_stale: StaleHook, on_final: FinalHook) -> None:
        self.ledger = ledger
        self.writer = writer
        self.clients = clients
        self.labels = labels
        self.output_dir = Path(state_dir) / "output"
        self.metrics = metrics
        self.epoch = epoch
        self.on_stale = on_stale
        self.on_final = on_final
        self.reachable: dict[str, bool] = dict.fromkeys(clients, True)
        self.load: dict[str, int] = dict.fromkeys(clients, 0)
        self._finishing: set[tuple[str, int]] = set()
        # The epoch each agent last confirmed to us: below ours, the agent must be told ours
        # before anything else is asked of it (it could still obey our cut-off predecessor).
        self.told: dict[str, int] = {}

    # -- agents ----------------------------------------------------------------
    def _mark(self, agent: str, ok: bool, why: str = "") -> None:
        if self.reachable.get(agent) != ok:
            if ok:
                log.info("agent %s reachable again", agent)
            else:
                log.warning("agent %s unreachable: %s", agent, why)
        self.reachable[agent] = ok
        if self.metrics is not None:
            self.metrics.set_agents_reachable(sum(self.reachable.values()))

    def reachable_count(self) -> int:
        return sum(self.reachable.values())

    def pick_agent(self, job: Any) -> str | None:
        """The job's agent, or the pool member with the fewest runs in flight (name breaks ties);
        reachable members first."""
        if getattr(job, "agent", None):
            return job.agent if job.agent in self.clients else None
        pool = getattr(job, "pool", None)
        members = sorted(a for a, labels in self.labels.items() if pool in labels)
        if not members:
            return None
        up = [a for a in members if self.reachable.get(a)] or members
        agent = min(up, key=lambda a: (self.load.get(a, 0), a))
        self.load[agent] = self.load.get(agent, 0) + 1  # counted at once: a burst spreads out
        return agent

    def answering(self) -> list[str]:
        """The agents whose last contact succeeded."""
        return [n for n in self.clients if self.reachable.get(n)]

    async def probe(self) -> int:
        """Health of every agent (read-only: a standby may call it); the highest epoch seen."""
        async def one(name: str, client: AgentClient) -> int:
            try:
                h = await client.health()
            except (AgentUnreachable, AgentError) as e:
                self._mark(name, False, str(e))
                return -1
            self._mark(name, True)
            return int(h.get("epoch", 0))
        epochs = await asyncio.gather(*(one(n, c) for n, c in self.clients.items()))
        return max(epochs, default=-1)

    async def push_epoch(self, agent: str) -> bool:
        """Make the agent keep our epoch durably. False when it did not answer (told again at
        the next contact). Raises StaleEpoch when it has seen a higher epoch."""
        epoch = self.epoch()
        if self.told.get(agent, -1) >= epoch:
            return True
        try:
            await asyncio.wait_for(self.clients[agent].raise_epoch(epoch), PUSH_TIMEOUT)
        except (AgentUnreachable, TimeoutError) as e:
            why = str(e) or f"no answer within {PUSH_TIMEOUT:g}s"
            self._mark(agent, False, why)
            log.warning("agent %s not told epoch %d: %s; will tell it when it answers",
                        agent, epoch, why)
            return False
        except StaleEpoch:
            raise
        except AgentError as e:
            if e.status != 404:
                self._mark(agent, False, str(e))
                log.warning("agent %s not told epoch %d: %s", agent, epoch, e)
                return False
            # An agent older than the push: our first order to it still raises its epoch.
            log.warning("agent %s is too old to be told epoch %d ahead of our orders", agent,
                        epoch)
        self.told[agent] = epoch
        self._mark(agent, True)
        log.info("agent %s now holds epoch %d", agent, epoch)
        return True

    async def push_epoch_all(self, names: list[str]) -> list[tuple[str, StaleEpoch]]:
        """Tell these agents our epoch at once; the agents that refused it (seen a higher one)."""
        results = await asyncio.gather(*(self.push_epoch(n) for n in names),
                                       return_exceptions=True)
        refused = []
        for name, result in zip(names, results, strict=True):
            if isinstance(result, StaleEpoch):
                refused.append((name, result))
            elif isinstance(result, BaseException):
                raise result
        return refused

    # -- dispatch --------------------------------------------------------------
    async def dispatch(self, row: dict[str, Any], job: Any) -> bool:
        """Send one scheduled run to its agent. False when it stays scheduled (agent down)."""
        agent = row.get("agent") or self.pick_agent(job)
        if agent is None:
            await self.writer.write([Change("update", row["run_id"], row["attempt"], fields={
                "state": "cancelled", "finished_at": utc_iso(),
                "reason": "no agent configured for this job"}, when=("scheduled",))])
            return False
        if not row.get("agent"):
            # The agent is chosen durably before the order leaves: a re-dispatch after a crash goes
            # to the same agent, whose (run_id, attempt) dedup then makes it harmless.
            await self.writer.write([Change("update", row["run_id"], row["attempt"],
                                            fields={"agent": agent}, when=("scheduled",))])
        try:
            secrets = read_secret_env(getattr(job, "secret_env", None) or {})
        except SecretError as e:
            await self.writer.write([Change("update", row["run_id"], row["attempt"], fields={
                "state": "failed", "finished_at": utc_iso(), "reason": str(e)},
                when=("scheduled",))])
            return False
        order = DispatchOrder(run_id=row["run_id"], job=row["job"], attempt=row["attempt"],
                              epoch=self.epoch(), command=command_of(job),
                              env={**(getattr(job, "env", None) or {}), **secrets},
                              cwd=getattr(job, "cwd", None), user=getattr(job, "user", None),
                              timeout=_seconds(getattr(job, "timeout", None)),
                              start_at=self._start_at(row),
                              memory_max=getattr(job, "memory_max", None),
                              cpu_weight=getattr(job, "cpu_weight", None))
        try:
            created, run = await self.clients[agent].dispatch(order)
        except AgentUnreachable as e:
            self._mark(agent, False, str(e))
            await self.writer.write([Change("update", row["run_id"], row["attempt"], fields={
                "reason": f"agent {agent} unreachable; will retry"}, when=("scheduled",))])
            return False
        except StaleEpoch as e:
            self.on_stale(agent, e)
            return False
        except AgentError as e:
            log.error("agent %s refused %s attempt %s: %s", agent, row["run_id"],
                      row["attempt"], e)
            await self.writer.write([Change("update", row["run_id"], row["attempt"], fields={
                "state": "failed", "finished_at": utc_iso(),
                "reason": f"refused by agent {agent}: {e}"}, when=("scheduled",))])
            return False
        self._mark(agent, True)
        await self.writer.write([Change("update", row["run_id"], row["attempt"], fields={
            "state": "running", "agent": agent, "epoch": run.get("epoch", order.epoch),
            "dispatched_at": utc_iso(), "started_at": run.get("started_at"), "reason": None,
        }, when=("scheduled", "dispatched"))])
        if created:
            self.observe_start(row, run)
        log.info("dispatched %s attempt %s to %s%s", row["run_id"], row["attempt"], agent,
                 "" if created else " (agent already had it)")
        return True

    @staticmethod
    def _start_at(row: dict[str, Any]) -> str | None:
        """A run sent before its nominal time starts on its agent at that time."""
        return row["nominal"] if parse_iso(row["nominal"]) > datetime.now(UTC) else None

    def observe_start(self, row: dict[str, Any], run: dict[str, Any]) -> None:
        """Dispatch lateness (agent's started_at - nominal) of a planned run, once its start
        is known: at dispatch, or later for a run sent ahead."""
        if row.get("manual") or not run.get("started_at") or self.metrics is None:
            return
        late = parse_iso(run["started_at"]) - parse_iso(row["nominal"])
        self.metrics.observe_lateness(max(0.0, late.total_seconds()))

    async def cancel(self, row: dict[str, Any]) -> None:
        agent = row.get("agent")
        if not agent or agent not in self.clients:
            return
        try:
            await self.clients[agent].cancel(row["run_id"], row["attempt"], self.epoch())
        except StaleEpoch as e:
            self.on_stale(agent, e)
        except (AgentUnreachable, AgentError) as e:
            log.warning("cannot cancel %s on %s: %s", row["run_id"], agent, e)

    # -- collect ---------------------------------------------------------------
    async def collect(self) -> None:
        """One pass over every agent: record progress and results, then acknowledge."""
        await asyncio.gather(*(self._collect_agent(n) for n in self.clients))
        counts: dict[str, int] = dict.fromkeys(self.clients, 0)
        for row in self.ledger.open_runs():
            if row["state"] != "scheduled" and row["agent"] in counts:
                counts[row["agent"]] += 1
        self.load = counts

    async def _collect_agent(self, agent: str) -> None:
        client = self.clients[agent]
        poll_start = utc_iso()
        try:
            if not await self.push_epoch(agent):
                return
            runs = await client.runs(unacked=True)
        except StaleEpoch as e:
            self.on_stale(agent, e)
            return
        except (AgentUnreachable, AgentError) as e:
            self._mark(agent, False, str(e))
            return
        self._mark(agent, True)
        seen = {(run["run_id"], int(run["attempt"])) for run in runs}
        # All of them at once: their ledger writes share the BatchWriter's transactions and
        # their acks go out together. One by one, a pass over a burst's runs took a transaction
        # and round trips per run, and the ledger learnt of starts seconds late.
        await asyncio.gather(*(self._collect_run(agent, run) for run in runs))
        for row in self.ledger.open_runs():
            key = (row["run_id"], row["attempt"])
            if (row["agent"] != agent or row["state"] == "scheduled" or key in seen
                    or (row["dispatched_at"] or "") >= poll_start):
                continue
            try:
                rec = await client.run(*key)
            except (AgentUnreachable, AgentError) as e:
                self._mark(agent, False, str(e))
                return
            if rec is None:
                await self._final(row, {"state": "lost", "finished_at": utc_iso(),
                                        "reason": f"agent {agent} does not know this run"})
            elif rec.get("acked") and rec["state"] in FINAL_STATES:
                # Collected and acknowledged by another scheduler (failover): take its result.
                await self._final(row, self._result_fields(rec))

    async def _collect_run(self, agent: str, run: dict[str, Any]) -> None:
        key = (run["run_id"], int(run["attempt"]))
        row = self.ledger.get_attempt(*key)
        if row is None:
            await self.writer.write([self.adoption(agent, run, final=False)])
            row = self.ledger.get_attempt(*key)
        if run["state"] in FINAL_STATES:
            await self.finish(agent, run)
        elif row and row["state"] in ("scheduled", "dispatched"):
            await self.writer.write([Change("update", *key, fields={
                "state": "running", "agent": agent, "started_at": run.get("started_at")},
                when=("scheduled", "dispatched"))])
        elif row and row["state"] == "running" and not row["started_at"] \
                and run.get("started_at"):  # sent ahead, started since
            await self.writer.write([Change("update", *key, fields={
                "started_at": run["started_at"]}, when=("running",))])
            self.observe_start(row, run)

    @staticmethod
    def _result_fields(run: dict[str, Any]) -> dict[str, Any]:
        dropped = (run.get("output") or {}).get("dropped") or {}
        return {"state": run["state"], "exit_code": run.get("exit_code"),
                "reason": run.get("reason"), "started_at": run.get("started_at"),
                "finished_at": run.get("finished_at"), "epoch": run.get("epoch"),
                "stdout_dropped": dropped.get("stdout"), "stderr_dropped": dropped.get("stderr")}

    async def _final(self, row: dict[str, Any], fields: dict[str, Any]) -> bool:
        done = await self.writer.write([Change("update", row["run_id"], row["attempt"],
                                               fields=fields, when=("scheduled", "dispatched",
                                                                    "running"))])
        if done[0]:
            if self.metrics is not None:
                self.metrics.count_run(fields["state"])
            log.info("run %s attempt %s %s%s", row["run_id"], row["attempt"], fields["state"],
                     f": {fields['reason']}" if fields.get("reason") else "")
            final = self.ledger.get_attempt(row["run_id"], row["attempt"])
            if final:
                await self.on_final(final)
        return done[0]

    async def finish(self, agent: str, run: dict[str, Any]) -> None:
        """Fetch the output, record the result durably, THEN acknowledge."""
        key = (run["run_id"], int(run["attempt"]))
        if key in self._finishing:
            return
        self._finishing.add(key)
        try:
            client = self.clients[agent]
            row = self.ledger.get_attempt(*key)
            if row is None:
                return
            fields = {**self._result_fields(run), "agent": agent}  # a held run has none yet
            if row["state"] not in FINAL_STATES or not row["output_path"]:
                base = self.output_dir / run["job"] / f"{run['run_id']}.{key[1]}"
                await self._save_output(client, key, base, (run.get("output") or {}))
                fields["output_path"] = str(base)
            if row["state"] not in FINAL_STATES:
                if not row["started_at"]:
                    self.observe_start(row, run)
                await self._final(row, fields)
            elif not row["output_path"]:
                await self.writer.write([Change("update", *key,
                                                fields={"output_path": fields["output_path"]})])
            await client.ack(*key, self.epoch())
        except StaleEpoch as e:
            self.on_stale(agent, e)
        except (AgentUnreachable, AgentError) as e:
            log.warning("collecting %s attempt %s from %s: %s", key[0], key[1], agent, e)
        finally:
            self._finishing.discard(key)

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

        def write() -> None:
            private_dir(base.parent, "run output directory")
            for path, text in texts.items():
                write_private(path, text)

        if texts:
            await asyncio.to_thread(write)

    # -- adoption (start as active, promote) -----------------------------------
    def adoption(self, agent: str, run: dict[str, Any], final: bool) -> Change:
        """A ledger upsert for a run an agent knows. Unless `final`, a finished run is recorded
        running so that `finish` still fetches its output and acknowledges it."""
        state = run["state"] if final else "running"
        fields = {"nominal": nominal_of(run["run_id"]), "agent": agent, "state": state,
                  "epoch": run.get("epoch"), "started_at": run.get("started_at"),
                  "dispatched_at": run.get("started_at")}
        if final:
            fields.update(self._result_fields(run))
        return Change("adopt", run["run_id"], int(run["attempt"]), run["job"], fields)

    async def _fetch_started(self, agent: str, now: datetime) -> list[dict[str, Any]] | None:
        try:
            runs = await self.clients[agent].runs(since=now - ADOPT_WINDOW)
        except (AgentUnreachable, AgentError) as e:
            self._mark(agent, False, str(e))
            log.warning("cannot adopt runs from %s: %s", agent, e)
            return None
        self._mark(agent, True)
        return runs

    def _adoptions(self, agent: str, runs: list[dict[str, Any]]) -> list[Change]:
        return [self.adoption(agent, run, bool(run.get("acked")) and run["state"] in FINAL_STATES)
                for run in runs]

    async def adopt(self, now: datetime, names: list[str]) -> tuple[dict[str, str], set[str]]:
        """Take into the ledger every run these agents started in the retention window.
        Returns, per job, the latest nominal time seen (the predecessor's last fire), and the
        agents that did not answer or were not asked (what they ran is unknown until
        `adopt_agent`)."""
        latest: dict[str, str] = {}
        changes: list[Change] = []
        fetched = await asyncio.gather(*(self._fetch_started(n, now) for n in names))
        for agent, runs in zip(names, fetched, strict=True):
            changes += self._adoptions(agent, runs or [])
            for run in runs or []:
                nominal = nominal_of(run["run_id"])
                if nominal > latest.get(run["job"], ""):
                    latest[run["job"]] = nominal
        done = await self.writer.write(changes)
        if any(done):
            log.info("adopted %d run record(s) from agents", sum(done))
        answered = {n for n, runs in zip(names, fetched, strict=True) if runs is not None}
        return latest, set(self.clients) - answered

    async def adopt_agent(self, agent: str, now: datetime) -> bool:
        """Adopt the runs of one agent that did not answer at promotion; False if it still
        does not."""
        runs = await self._fetch_started(agent, now)
        if runs is None:
            return False
        done = await self.writer.write(self._adoptions(agent, runs))
        log.info("agent %s answered: adopted %d run record(s) from it", agent, sum(done))
        return True
