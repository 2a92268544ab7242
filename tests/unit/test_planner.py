from dataclasses import replace
from datetime import UTC, date, datetime, timedelta

import pytest

from scheduler.jobs import Job, Misfire, Retries
from scheduler.planner import (
    FirePlan,
    concurrency_decision,
    dependency_state,
    manual_run_id,
    missed_fires,
    nominal_of,
    parse_run_id,
    retry_at,
    run_id,
    stale_run_verdict,
)
from scheduler.triggers import make_trigger

pytestmark = pytest.mark.unit


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def job(name: str = "j", schedule: str | None = "*/10 * * * *", **fields) -> Job:
    tz = fields.pop("timezone", "UTC")
    every = fields.pop("every", None)
    trigger = make_trigger(schedule=None if every else schedule, every=every, timezone=tz)
    return Job(name=name, command=("/bin/true",), trigger=trigger, timezone=tz, pool="p",
               **fields)


# --- run ids

def test_run_id_round_trip():
    nominal = datetime(2026, 12, 1, 2, 30, tzinfo=UTC)
    assert run_id("nightly-backup", nominal) == "nightly-backup@2026-12-01T02:30:00Z"
    assert parse_run_id("nightly-backup@2026-12-01T02:30:00Z") == ("nightly-backup", nominal)


def test_run_id_is_utc_whatever_the_input_zone():
    from zoneinfo import ZoneInfo
    local = datetime(2026, 12, 1, 3, 30, tzinfo=ZoneInfo("Europe/Berlin"))
    assert run_id("a", local) == "a@2026-12-01T02:30:00Z"


def test_manual_run_ids_are_their_own():
    t = datetime(2026, 12, 1, 2, 30, tzinfo=UTC)
    ids = {manual_run_id("hello", t) for _ in range(3)}
    assert len(ids) == 3 and run_id("hello", t) not in ids  # nor the scheduled fire's
    for rid in ids:
        assert rid.startswith("hello@2026-12-01T02:30:00Z~manual-")
        assert parse_run_id(rid) == ("hello", t)
        assert nominal_of(rid) == nominal_of(run_id("hello", t)) == "2026-12-01T02:30:00Z"


@pytest.mark.parametrize("bad", ["nojob", "@2026-12-01T02:30:00Z", "a@2026-12-01 02:30",
                                 "a@2026-12-01T02:30:00Z~", "a@2026-12-01T02:30:00Z~other",
                                 "a b@2026-12-01T02:30:00Z", "a@2026-13-01T02:30:00Z"])
def test_parse_run_id_rejects(bad):
    with pytest.raises(ValueError, match=r"^not a run id: "):
        parse_run_id(bad)


# --- misfires

@pytest.mark.parametrize("policy, grace, expected", [
    ("run-once", 3600, ["2026-05-05T10:50"]),
    ("run-all", 3600, ["2026-05-05T10:10", "2026-05-05T10:20", "2026-05-05T10:30",
                       "2026-05-05T10:40", "2026-05-05T10:50"]),
    ("run-all", 1200, ["2026-05-05T10:40", "2026-05-05T10:50"]),
    ("skip", 3600, []),
    ("run-once", 60, []),  # the latest miss (10:50) is older than now - grace
])
def test_missed_fires_follow_policy(policy, grace, expected):
    j = job(misfire=Misfire(policy, grace))
    got = missed_fires(j, utc("2026-05-05T10:00"), utc("2026-05-05T10:55"))
    assert [f.strftime("%Y-%m-%dT%H:%M") for f in got] == expected


def test_missed_fires_edges():
    j = job(misfire=Misfire("run-all", 1800))
    assert missed_fires(j, None, utc("2026-05-05T10:55")) == []  # new job: no backfill
    # a fire exactly at now counts; one exactly at now - grace too
    assert missed_fires(j, utc("2026-05-05T10:00"), utc("2026-05-05T10:50")) == [
        utc("2026-05-05T10:20"), utc("2026-05-05T10:30"), utc("2026-05-05T10:40"),
        utc("2026-05-05T10:50")]


def test_run_all_is_capped_to_latest_thousand():
    j = job(schedule="* * * * *", misfire=Misfire("run-all", 10 * 86400))
    got = missed_fires(j, utc("2026-05-01T00:00"), utc("2026-05-03T00:00"))
    assert len(got) == 1000 and got[-1] == utc("2026-05-03T00:00")
    assert got[0] == utc("2026-05-03T00:00") - timedelta(minutes=999)


# --- concurrency and retries

@pytest.mark.parametrize("policy, in_flight, expected", [
    ("forbid", 0, "dispatch"), ("forbid", 1, "skip"), ("allow", 3, "dispatch"),
    ("replace", 0, "dispatch"), ("replace", 1, "replace"),
])
def test_concurrency_decision(policy, in_flight, expected):
    assert concurrency_decision(job(concurrency=policy), in_flight) == expected


def test_retry_at_fixed_delay_until_exhausted():
    j = job(retries=Retries(2, 300))
    done = utc("2026-05-05T10:00")
    assert retry_at(j, 1, done) == utc("2026-05-05T10:05")
    assert retry_at(j, 2, done) == utc("2026-05-05T10:05")
    assert retry_at(j, 3, done) is None
    assert retry_at(job(), 1, done) is None


# --- dependencies

def test_dependency_state_uses_local_date_of_dependent():
    j = job(name="load", timezone="America/New_York", after=("extract", "clean"))
    asked = []

    def lookup(states):
        def inner(dep, day):
            asked.append((dep, day))
            return states.get(dep)
        return inner

    nominal = utc("2026-05-06T02:00")  # 22:00 on the 5th in New York
    assert dependency_state(j, nominal, lookup({"extract": "succeeded", "clean": "succeeded"})) \
        == "ready"
    assert asked[0] == ("extract", date(2026, 5, 5))
    assert dependency_state(j, nominal, lookup({"extract": "succeeded", "clean": "pending"})) \
        == "wait"
    assert dependency_state(j, nominal, lookup({"extract": "succeeded"})) == "wait"
    assert dependency_state(j, nominal, lookup({"extract": "failed", "clean": "pending"})) \
        == "failed"
    assert dependency_state(job(), nominal, lookup({})) == "ready"


# --- the fire plan

def test_fire_plan_orders_and_replans():
    plan = FirePlan()
    jobs = {"a": job("a", "*/10 * * * *"), "b": job("b", every="15m"),
            "once": job("once"), "c": job("c", "0 0 1 1 *")}
    jobs["once"] = replace(jobs["once"], trigger=make_trigger(at="2026-05-05T10:12"))
    plan.load(jobs, utc("2026-05-05T10:00"))
    assert plan.next_time() == utc("2026-05-05T10:10")
    assert plan.due(utc("2026-05-05T10:09")) == []
    assert plan.due(utc("2026-05-05T10:30")) == [
        ("a", utc("2026-05-05T10:10")), ("once", utc("2026-05-05T10:12")),
        ("b", utc("2026-05-05T10:15")), ("a", utc("2026-05-05T10:20")),
        ("a", utc("2026-05-05T10:30")), ("b", utc("2026-05-05T10:30"))]
    assert plan.next_fire("once") is None and len(plan) == 3
    assert plan.next_time() == utc("2026-05-05T10:40")


def test_fire_plan_replace_keeps_unchanged_and_drops_removed():
    plan = FirePlan()
    plan.load([job("keep", "0 * * * *"), job("gone", "*/5 * * * *"), job("change", "0 * * * *")],
              utc("2026-05-05T10:00"))
    assert plan.due(utc("2026-05-05T10:00")) == []
    plan.replace_jobs([job("keep", "0 * * * *", description="new text"),
                       job("change", "*/20 * * * *"), job("new", "*/7 * * * *")],
                      utc("2026-05-05T10:30"))
    assert plan.next_fire("keep") == utc("2026-05-05T11:00")  # unchanged: position kept
    assert plan.next_fire("change") == utc("2026-05-05T10:40")
    assert plan.next_fire("new") == utc("2026-05-05T10:35")
    assert plan.next_fire("gone") is None
    assert plan.due(utc("2026-05-05T11:00")) == [
        ("new", utc("2026-05-05T10:35")), ("change", utc("2026-05-05T10:40")),
        ("new", utc("2026-05-05T10:42")), ("new", utc("2026-05-05T10:49")),
        ("new", utc("2026-05-05T10:56")), ("change", utc("2026-05-05T11:00")),
        ("keep", utc("2026-05-05T11:00")), ("new", utc("2026-05-05T11:00"))]


def test_fire_plan_re_adding_a_job_does_not_double_fire():
    plan = FirePlan()
    plan.load([job("a", "0 * * * *")], utc("2026-05-05T10:00"))
    plan.remove("a")
    plan.replace_jobs([job("a", "0 * * * *")], utc("2026-05-05T10:00"))
    assert plan.due(utc("2026-05-05T11:00")) == [("a", utc("2026-05-05T11:00"))]
    assert plan.next_time() == utc("2026-05-05T12:00")


# --- runs left scheduled by an earlier term

@pytest.mark.parametrize("policy, due, newest, planned, expected", [
    ("run-all", "10:05", None, True, None),
    ("run-all", "09:00", None, True, "missed: not sent within the misfire grace (1h)"),
    ("run-all", "09:00", None, False, "missed: not sent within the misfire grace (1h)"),
    ("skip", "10:05", None, True, "missed while no scheduler was active (misfire policy skip)"),
    ("skip", "10:05", None, False, None),
    ("run-once", "10:05", "10:10", True, "missed: coalesced into the fire of "
                                         "2026-05-05T10:10:00Z (misfire policy run-once)"),
    ("run-once", "10:10", "10:10", True, None),
    ("run-once", "10:05", "10:10", False, None),
])
def test_stale_run_verdict(policy, due, newest, planned, expected):
    j = job(misfire=Misfire(policy, 3600))
    at = utc(f"2026-05-05T{due}")
    top = utc(f"2026-05-05T{newest}") if newest else None
    assert stale_run_verdict(j, at, utc("2026-05-05T10:30"), planned, top) == expected
