"""The term: this scheduler's role and everything about the term it is in.

One owner of every HA decision (Patroni's ha.py is the model, kept small): becoming active,
going back to standby, being superseded, and reconciling with an agent that did not answer when
the term began. Each such cycle starts from a snapshot of the term and ends with one sentence
saying what it decided, logged. The term decides; the parts act: the agent pool probes and
pushes, the adopter takes in what agents ran, the daemon's hooks start and stop the work of an
active term (catch-up, the planning and collecting loops).

What a term is: an epoch (durable in the ledger, raised by each promotion), when it began,
which agents it has not yet reconciled with (those that did not answer then: a run missed
before may have gone to one of them), and which agents were told the epoch (an agent that holds
it refuses our cut-off predecessor).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from scheduler.adopt import Adopter
from scheduler.agents import AgentPool
from scheduler.ledger import Ledger, parse_time
from scheduler.protocol import StaleEpoch
from scheduler.runs import SCHEDULED, Run
from scheduler.times import utc_now

log = logging.getLogger("hasched.scheduler")

ACTIVE = "active"
STANDBY = "standby"
DEMOTING = "demoting"  # superseded: no new work from now on, the demotion under way

Begin = Callable[[dict[str, str], datetime], Awaitable[None]]
End = Callable[[], Awaitable[None]]


class ReplicaHooks(Protocol):
    """Replication's part in a term (scheduler/replication/node.py)."""

    @property
    def following(self) -> bool:
        """The ledger is a replica of the active's (it knows what the predecessor sent where)."""

    async def before_active(self) -> None:
        """Before acting as active: drain the stream from the source, stop following."""

    def on_standby(self) -> None:
        """Standby now: follow the active."""


class Superseded(RuntimeError):
    """Agents have seen a higher epoch than ours: another scheduler is active."""


@dataclass(frozen=True)
class Snapshot:
    """The term as a cycle found it."""

    role: str
    epoch: int
    began_at: datetime | None
    answering: tuple[str, ...]
    unreconciled: frozenset[str]


def _names(agents: Iterable[str]) -> str:
    return ", ".join(sorted(agents)) or "none"


class _Phases:
    """The steps of a cycle and how long each took: "probe 0.002s, told 0.004s, ..."."""

    def __init__(self) -> None:
        self._last = time.monotonic()
        self._took: list[tuple[str, float]] = []

    def mark(self, step: str) -> None:
        now = time.monotonic()
        self._took.append((step, now - self._last))
        self._last = now

    def __str__(self) -> str:
        return ", ".join(f"{step} {took:.3f}s" for step, took in self._took)


class Term:
    def __init__(self, ledger: Ledger, pool: AgentPool, adopter: Adopter, on_active: Begin,  # noqa: PLR0913 - its collaborators, given by daemon.py, which wires the parts
                 on_standby: End, metrics: Any = None,
                 clock: Callable[[], datetime] = utc_now) -> None:
        """`on_active(latest, began_at)` starts the work of an active term (latest: per job,
        the newest fire the agents showed); `on_standby()` stops it."""
        self.ledger, self.pool, self.adopter = ledger, pool, adopter
        self.on_active, self.on_standby = on_active, on_standby
        self.metrics, self.clock = metrics, clock
        self.role = STANDBY
        self.began_at: datetime | None = None
        self.unreconciled: set[str] = set()
        # The epoch each agent last confirmed to us: below ours, the agent must be told ours
        # before anything else is asked of it (it could still obey our cut-off predecessor).
        self.told: dict[str, int] = {}
        self._reconciling: set[str] = set()
        self._lock = asyncio.Lock()
        self._demotions: set[asyncio.Task[str]] = set()
        self.replica: ReplicaHooks | None = None  # set by the daemon when it replicates

    # -- what the term is ----------------------------------------------------------------
    @property
    def epoch(self) -> int:
        return self.ledger.epoch()

    @property
    def active(self) -> bool:
        return self.role == ACTIVE

    @property
    def public_role(self) -> str:
        """What status and /health say: demoting is standby already."""
        return ACTIVE if self.active else STANDBY

    def snapshot(self) -> Snapshot:
        return Snapshot(self.role, self.epoch, self.began_at, tuple(self.pool.answering()),
                        frozenset(self.unreconciled))

    def _set_role(self, role: str) -> None:
        if role != self.role:
            log.warning("role: %s -> %s (epoch %d)", self.role, role, self.epoch)
        self.role = role
        if self.metrics is not None:
            self.metrics.set_role(role)

    def _follow(self) -> None:
        """Standby (again): replication follows the active."""
        if self.replica is not None:
            self.replica.on_standby()

    @staticmethod
    def _decided(sentence: str, level: int = logging.INFO) -> str:
        log.log(level, "term: %s", sentence)
        return sentence

    # -- cycles ----------------------------------------------------------------------------
    async def promote(self, epoch: int) -> str:
        """Raise the epoch (durable before we act under it), then become active."""
        log.info("term: promotion to epoch %d asked (at %d)", epoch, self.epoch)
        phases = _Phases()
        if self.replica is not None and not self.active:
            await self.replica.before_active()  # the epoch is raised after the drain
            phases.mark("drained")
        new = self.ledger.raise_epoch(epoch)  # an fsync: slow on a busy disk
        phases.mark("epoch written")
        if self.metrics is not None:
            self.metrics.set_epoch(new)
        return await self.activate(phases, drained=True)

    async def activate(self, phases: _Phases | None = None, drained: bool = False) -> str:
        """Become active: refuse when agents have seen a higher epoch (Superseded); tell the
        answering agents our epoch, adopt what they ran, then start the work. `drained`: the
        replica's stream was drained already (by promote)."""
        async with self._lock:
            snap = self.snapshot()
            if snap.role == ACTIVE:
                return self._decided(f"already active at epoch {snap.epoch}")
            # How long each step took, in the sentence: the failover's phases, from the log.
            phases = phases or _Phases()
            phases.mark("waited")  # for a cycle under way (a demotion)
            if self.replica is not None and not drained:
                await self.replica.before_active()
                snap = self.snapshot()  # the drain may have raised the epoch
                phases.mark("drained")
            seen = await self.pool.probe()
            phases.mark("probe")
            if seen > snap.epoch:
                self._decided(f"SUPERSEDED: agents have seen epoch {seen} > ours {snap.epoch}; "
                              "staying standby", logging.ERROR)
                self._follow()
                raise Superseded(f"agents have seen epoch {seen} > {snap.epoch}: "
                                 "another scheduler is active")
            # Before anything is adopted or sent: an agent that holds our epoch refuses our
            # cut-off predecessor from now on, not only once we first send it an order.
            # Only the agents that answered the probe: a dead node's agent would hold the
            # failover for a timeout at each step. The collect loop tells and adopts it later.
            up = self.pool.answering()
            refused = await self.tell_all(up)
            phases.mark("told")
            if refused:
                agent, e = refused[0]
                self._decided(f"SUPERSEDED: agent {agent} refused our epoch {snap.epoch} ({e}); "
                              "staying standby", logging.ERROR)
                self._follow()
                raise Superseded(f"agent {agent} has seen epoch {e.agent_epoch} > "
                                 f"{snap.epoch}: another scheduler is active")
            self._set_role(ACTIVE)
            now = self.clock()
            latest, self.unreconciled = await self.adopter.adopt(now, up)
            phases.mark("adopted")
            self.began_at = now
            await self.on_active(latest, now)
            phases.mark("caught up")
            later = (f"; not yet reconciled: {_names(self.unreconciled)}"
                     if self.unreconciled else "")
            return self._decided(f"active at epoch {snap.epoch}: told and reconciled "
                                 f"{_names(up)}{later} ({phases})")

    async def demote(self, why: str = "asked to") -> str:
        """Stop the work of the term and go back to standby."""
        async with self._lock:
            snap = self.snapshot()
            await self.on_standby()
            self._set_role(STANDBY)
            self._follow()
            was = "" if snap.role == STANDBY else f" ({why}; was {snap.role})"
            return self._decided(f"standby at epoch {snap.epoch}{was}")

    def superseded(self, agent: str, e: StaleEpoch) -> None:
        """An agent refused our epoch: demote at once (no new dispatch from here on)."""
        if not self.active:
            return
        log.error("SUPERSEDED: agent %s refused our epoch %d (%s); demoting to standby",
                  agent, self.epoch, e)
        self.role = DEMOTING  # stops new dispatches at once; the task below finishes the job
        task = asyncio.get_running_loop().create_task(
            self.demote(f"agent {agent} has seen epoch {e.agent_epoch}"))
        self._demotions.add(task)
        task.add_done_callback(self._demotions.discard)

    async def reconcile(self) -> str | None:
        """Adopt what the agents unreconciled at the start of the term ran, for those that
        answer now. The sentence when one was reconciled, else None (each collect pass starts
        this)."""
        snap = self.snapshot()
        if snap.role != ACTIVE or not snap.unreconciled:
            return None
        # Those that answer now, all at once; not one already being reconciled (the collect
        # loop runs this in the background each pass: a long listing holds no pass).
        ready = [a for a in sorted(snap.unreconciled)
                 if self.pool.reachable.get(a) and a not in self._reconciling]
        self._reconciling.update(ready)
        try:
            adopted = await asyncio.gather(*(self.adopter.adopt_agent(a, self.clock())
                                             for a in ready))
        finally:
            self._reconciling.difference_update(ready)
        done = [a for a, ok in zip(ready, adopted, strict=True) if ok]
        self.unreconciled.difference_update(done)  # at once: runs held for them may go on
        if not done:
            return None
        rest = f"; still not: {_names(self.unreconciled)}" if self.unreconciled else ""
        return self._decided(f"reconciled with {_names(done)} at epoch {snap.epoch}{rest}")

    # -- the epoch at the agents ----------------------------------------------------------
    async def tell(self, agent: str) -> bool:
        """Make sure the agent holds our epoch. False when it did not answer (told again at
        the next contact). Raises StaleEpoch when it has seen a higher epoch."""
        epoch = self.epoch
        if self.told.get(agent, -1) >= epoch:
            return True
        if not await self.pool.push_epoch(agent, epoch):
            return False
        self.told[agent] = epoch
        return True

    async def tell_all(self, names: list[str]) -> list[tuple[str, StaleEpoch]]:
        """Tell these agents our epoch at once; the agents that refused it (seen a higher one)."""
        results = await asyncio.gather(*(self.tell(n) for n in names), return_exceptions=True)
        refused = []
        for name, result in zip(names, results, strict=True):
            if isinstance(result, StaleEpoch):
                refused.append((name, result))
            elif isinstance(result, BaseException):
                raise result
        return refused

    # -- what the term means for a run ------------------------------------------------------
    def before_term(self, run: Run) -> bool:
        """A planned fire from before this term began (the predecessor's to send)."""
        return (run.planned and self.began_at is not None
                and parse_time(run.nominal) < self.began_at)

    def unsure_members(self, job: Any, run: Run) -> list[str]:
        """The agents not reconciled since this term began that a run must wait for: for a
        planned fire from before then, the pool members (the predecessor may have sent it to
        one of them, and a run sent to another member would run twice); for any run of a job
        that must not overlap itself (concurrency forbid or replace), the job's agents (a run
        the predecessor started may still be running on one of them)."""
        if not self.unreconciled or self.began_at is None:
            return []
        if job.concurrency == "allow" and (job.agent or not self.before_term(run)):
            return []
        mine = [job.agent] if job.agent else self.pool.members(job.pool)
        unsure = sorted(a for a in mine if a in self.unreconciled)
        if not unsure or self.before_term(run) or not self.replicated:
            return unsure
        # A replica knows what the predecessor sent where: only an agent that may hold an
        # unfinished earlier run of this job can make this one overlap it. Without that
        # narrowing, every forbid pool job (the default) would stop on the other members for
        # as long as a crashed node's agent is away. A run not yet recorded as sent may have
        # gone to any member.
        may_hold: set[str] = set()
        for other in self.ledger.open_runs(job.name):
            if other.key == run.key:
                continue
            if other.agent and other.state != SCHEDULED:
                may_hold.add(other.agent)
            else:
                may_hold.update(unsure)
        return [a for a in unsure if a in may_hold]

    @property
    def replicated(self) -> bool:
        return self.replica is not None and bool(self.replica.following)
