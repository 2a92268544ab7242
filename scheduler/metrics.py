"""Prometheus metrics of one scheduler process.

A private registry (not prometheus_client's global one) so that several schedulers in one test
process, or a re-created app, never collide on metric names.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

CONTENT_TYPE = CONTENT_TYPE_LATEST

OUTCOMES = ("succeeded", "failed", "timed-out", "cancelled", "lost")
ROLES = ("active", "standby")
REPLICATION_STATES = ("primary", "alone", "in-sync", "lagging", "never")

# From a few milliseconds (a healthy loop) to several minutes (a failover or a stalled loop).
LATENESS_BUCKETS = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._lateness = Histogram(
            "hasched_dispatch_lateness_seconds",
            "Delay between a run's nominal fire time and its dispatch to an agent.",
            buckets=LATENESS_BUCKETS,
            registry=self.registry,
        )
        self._runs = Counter(
            "hasched_runs",
            "Finished runs (attempts) by outcome.",
            ["outcome"],
            registry=self.registry,
        )
        self._agents_reachable = Gauge(
            "hasched_agents_reachable", "Agents that answered their last health check.",
            registry=self.registry,
        )
        self._agents_total = Gauge(
            "hasched_agents_total", "Agents in the scheduler configuration.",
            registry=self.registry,
        )
        self._role = Gauge(
            "hasched_role", "1 for the role this scheduler holds, 0 for the other.",
            ["role"], registry=self.registry,
        )
        self._behind = Gauge(
            "hasched_behind_seconds",
            "How late the oldest due fire not yet started is (0: keeping up); past capacity "
            "fires wait and start late, in order, and this grows.", registry=self.registry,
        )
        self._epoch = Gauge(
            "hasched_epoch", "The scheduler's current epoch.", registry=self.registry
        )
        self._repl_seq = Gauge(
            "hasched_replication_seq", "The seq of this node's last change log entry.",
            registry=self.registry)
        self._repl_lag = Gauge(
            "hasched_replication_lag_seconds", "Standby: how old the newest change it has "
            "applied is while the source has more (0: in step).", registry=self.registry)
        self._repl_behind = Gauge(
            "hasched_replication_behind", "Standby: entries the source has, not applied yet.",
            registry=self.registry)
        self._repl_state = Gauge(
            "hasched_replication_state", "1 for this node's replication state (primary, alone "
            "= active without its follower, in-sync, lagging, never), 0 for the others.",
            ["state"], registry=self.registry)
        # Show every series from the start: a rate() over a series that appears late is wrong.
        for outcome in OUTCOMES:
            self._runs.labels(outcome=outcome)
        self.set_role("standby")

    def observe_lateness(self, seconds: float) -> None:
        # A run dispatched early (clock step) is counted as on time rather than dropped.
        self._lateness.observe(max(0.0, float(seconds)))

    def count_run(self, outcome: str) -> None:
        if outcome not in OUTCOMES:
            raise ValueError(f"unknown run outcome {outcome!r}")
        self._runs.labels(outcome=outcome).inc()

    def set_agents_reachable(self, n: int) -> None:
        self._agents_reachable.set(n)

    def set_agents_total(self, n: int) -> None:
        self._agents_total.set(n)

    def set_role(self, role: str) -> None:
        if role not in ROLES:
            raise ValueError(f"unknown role {role!r}")
        for r in ROLES:
            self._role.labels(role=r).set(1 if r == role else 0)

    def set_behind(self, seconds: float) -> None:
        self._behind.set(max(0.0, float(seconds)))

    def set_replication(self, seq: int, state: str, lag: float | None, behind: int) -> None:
        self._repl_seq.set(seq)
        self._repl_lag.set(max(0.0, float(lag or 0.0)))
        self._repl_behind.set(max(0, behind))
        for s in REPLICATION_STATES:
            self._repl_state.labels(state=s).set(1 if s == state else 0)

    def set_epoch(self, n: int) -> None:
        self._epoch.set(n)

    def render(self) -> bytes:
        return generate_latest(self.registry)
