"""Metrics: names and labels as docs/interfaces.md fixes them, on a private registry."""

from __future__ import annotations

import pytest
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from scheduler.metrics import CONTENT_TYPE, OUTCOMES, Metrics

pytestmark = pytest.mark.unit


def samples(m: Metrics) -> dict[tuple[str, tuple], float]:
    out = {}
    for family in text_string_to_metric_families(m.render().decode()):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_every_outcome_series_exists_at_zero_and_counts():
    m = Metrics()
    m.count_run("failed")
    m.count_run("failed")
    m.count_run("lost")
    got = samples(m)
    expected = {"failed": 2.0, "lost": 1.0}
    for outcome in OUTCOMES:
        assert got[("hasched_runs_total", (("outcome", outcome),))] == expected.get(outcome, 0.0)


def test_unknown_outcome_and_role_are_refused():
    m = Metrics()
    with pytest.raises(ValueError):
        m.count_run("exploded")
    with pytest.raises(ValueError):
        m.set_role("leader")


def test_lateness_histogram_buckets_span_milliseconds_to_minutes():
    m = Metrics()
    m.observe_lateness(0.003)
    m.observe_lateness(42.0)
    m.observe_lateness(-1.0)  # a clock step backwards counts as on time
    got = samples(m)
    bucket = "hasched_dispatch_lateness_seconds_bucket"
    assert got[(bucket, (("le", "0.005"),))] == 2.0
    assert got[(bucket, (("le", "30.0"),))] == 2.0
    assert got[(bucket, (("le", "60.0"),))] == 3.0
    assert got[(bucket, (("le", "+Inf"),))] == 3.0
    assert got[("hasched_dispatch_lateness_seconds_count", ())] == 3.0


def test_role_is_one_hot_and_epoch_agents_are_gauges():
    m = Metrics()
    assert samples(m)[("hasched_role", (("role", "standby"),))] == 1.0
    m.set_role("active")
    m.set_epoch(12)
    m.set_agents_reachable(1)
    m.set_agents_total(2)
    got = samples(m)
    assert got[("hasched_role", (("role", "active"),))] == 1.0
    assert got[("hasched_role", (("role", "standby"),))] == 0.0
    assert got[("hasched_epoch", ())] == 12.0
    assert got[("hasched_agents_reachable", ())] == 1.0
    assert got[("hasched_agents_total", ())] == 2.0


def test_two_instances_do_not_share_or_touch_the_global_registry():
    a, b = Metrics(), Metrics()
    a.count_run("succeeded")
    assert samples(b)[("hasched_runs_total", (("outcome", "succeeded"),))] == 0.0
    assert REGISTRY.get_sample_value("hasched_epoch") is None
    assert CONTENT_TYPE.startswith("text/plain")
