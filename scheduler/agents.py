"""The agent pool: which agents there are and which answer, their load, the probes and the epoch
push. It decides nothing about the term: the term (scheduler.term) says which epoch to push and
remembers who holds it; dispatch, collect and adopt use the pool to reach agents."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Mapping
from typing import Any

from scheduler.protocol import AgentClient, AgentError, AgentUnreachable, StaleEpoch
from scheduler.runs import SCHEDULED, Run

log = logging.getLogger("hasched.dispatch")

# Per-agent bounds on what a promotion waits for. An agent on a LAN answers these in
# milliseconds; one that does not within a second is stopped (SIGSTOP), on a dead node (its
# kept-alive connections hang until a timeout: no RST comes back) or overloaded, and the
# promotion goes on without it: it is reconciled and told the epoch when it answers again
# (scheduler.term). The client's own timeouts (connect 1.5 s, total 5 s) would hold a failover
# for up to 5 s per step (issue 10 measured 5.4 s).
PROBE_TIMEOUT = 1.0  # health, at promotion and a standby's periodic probe
PUSH_TIMEOUT = 1.0  # telling an agent a new epoch (a durable write on the agent: one fsync)
# Listing a week of runs at promotion (the adoption): a bigger answer than a probe, still
# well under this from a live agent.
ADOPT_TIMEOUT = 2.0


class AgentPool:
    def __init__(self, clients: Mapping[str, AgentClient], labels: Mapping[str, Iterable[str]],  # noqa: PLR0913 - the bounds are the tests' to shorten
                 metrics: Any = None, push_timeout: float = PUSH_TIMEOUT,
                 probe_timeout: float = PROBE_TIMEOUT,
                 adopt_timeout: float = ADOPT_TIMEOUT) -> None:
        self.clients = dict(clients)
        self.labels = {name: list(ls) for name, ls in labels.items()}
        self.metrics = metrics
        self.push_timeout = push_timeout
        self.probe_timeout = probe_timeout
        self.adopt_timeout = adopt_timeout
        # Optimistic until a contact fails: at start the first probe or order tells.
        self.reachable: dict[str, bool] = dict.fromkeys(self.clients, True)
        self.load: dict[str, int] = dict.fromkeys(self.clients, 0)

    def __contains__(self, agent: object) -> bool:
        return agent in self.clients

    def client(self, agent: str) -> AgentClient:
        return self.clients[agent]

    # -- reachability ---------------------------------------------------------------
    def mark(self, agent: str, ok: bool, why: str = "") -> None:
        """Record the outcome of the last contact with an agent (logged when it changes)."""
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

    def answering(self) -> list[str]:
        """The agents whose last contact succeeded."""
        return [n for n in self.clients if self.reachable.get(n)]

    def members(self, pool: str | None) -> list[str]:
        """The agents labelled with `pool`, by name."""
        return sorted(a for a, labels in self.labels.items() if pool in labels)

    # -- load ---------------------------------------------------------------------------
    def pick(self, job: Any) -> str | None:
        """The job's agent, or the pool member with the fewest runs in flight (name breaks ties);
        reachable members first."""
        if job.agent:
            return job.agent if job.agent in self.clients else None
        members = self.members(job.pool)
        if not members:
            return None
        up = [a for a in members if self.reachable.get(a)] or members
        agent = min(up, key=lambda a: (self.load.get(a, 0), a))
        self.load[agent] = self.load.get(agent, 0) + 1  # counted at once: a burst spreads out
        return agent

    def recount(self, open_runs: Iterable[Run]) -> None:
        """The load from the ledger's open runs: those handed to an agent count."""
        counts: dict[str, int] = dict.fromkeys(self.clients, 0)
        for run in open_runs:
            if run.state != SCHEDULED and run.agent in counts:
                counts[run.agent] += 1
        self.load = counts

    # -- probes and epochs ----------------------------------------------------------------
    async def probe(self) -> int:
        """Health of every agent at once, each within `probe_timeout` (read-only: a standby may
        call it); the highest epoch seen, -1 when none answered."""
        async def one(name: str, client: AgentClient) -> int:
            try:
                h = await client.health(timeout=self.probe_timeout)
            except (AgentUnreachable, AgentError) as e:
                self.mark(name, False, str(e))
                return -1
            self.mark(name, True)
            return int(h.get("epoch", 0))
        epochs = await asyncio.gather(*(one(n, c) for n, c in self.clients.items()))
        return max(epochs, default=-1)

    async def push_epoch(self, agent: str, epoch: int) -> bool:
        """Make the agent keep `epoch` durably. False when it did not answer in time. Raises
        StaleEpoch when it has seen a higher epoch."""
        try:
            await self.clients[agent].raise_epoch(epoch, timeout=self.push_timeout)
        except AgentUnreachable as e:
            why = str(e)
            self.mark(agent, False, why)
            log.warning("agent %s not told epoch %d: %s; will tell it when it answers",
                        agent, epoch, why)
            return False
        except StaleEpoch:
            raise
        except AgentError as e:
            if e.status != 404:
                self.mark(agent, False, str(e))
                log.warning("agent %s not told epoch %d: %s", agent, epoch, e)
                return False
            # An agent older than the push: our first order to it still raises its epoch.
            log.warning("agent %s is too old to be told epoch %d ahead of our orders", agent,
                        epoch)
        self.mark(agent, True)
        log.info("agent %s now holds epoch %d", agent, epoch)
        return True

    async def close(self) -> None:
        for c in self.clients.values():
            await c.close()
