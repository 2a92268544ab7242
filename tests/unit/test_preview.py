"""The preview's notes: why each fire is where it is (DST, calendars, business days)."""

from datetime import UTC, date, datetime

import pytest

from scheduler.calendars import Calendar
from scheduler.jobs import Job
from scheduler.preview import forecast, never_fires, preview
from scheduler.triggers import DstPolicy, make_trigger

pytestmark = pytest.mark.unit


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def shown(trigger, start: str, count: int) -> list[tuple[str, str, list[str]]]:
    return [(f.local.strftime("%Y-%m-%d %H:%M %Z"), f.at.strftime("%Y-%m-%dT%H:%MZ"),
             list(f.notes)) for f in preview(trigger, utc(start), count=count)]


def test_fixed_time_in_a_gap_says_where_it_runs():
    trigger = make_trigger(schedule="0,30 2 * * *", timezone="Europe/Berlin")
    assert shown(trigger, "2027-03-27T12:00", 2) == [
        ("2027-03-28 03:00 CEST", "2027-03-28T01:00Z",
         ["02:00, 02:30 do not exist on 2027-03-28 -> runs 03:00 (once)"]),
        ("2027-03-29 02:00 CEST", "2027-03-29T00:00Z", [])]


def test_real_time_in_a_gap_says_what_was_skipped():
    trigger = make_trigger(schedule="0 * * * *", timezone="Australia/Lord_Howe")
    assert shown(trigger, "2026-10-03T14:00", 2) == [
        ("2026-10-04 01:00 +1030", "2026-10-03T14:30Z", []),
        ("2026-10-04 03:00 +11", "2026-10-03T16:00Z",
         ["02:00 does not exist on 2026-10-04 (clocks jump from 02:00 to 02:30) -> skipped"])]


def test_repeated_wall_time_says_which_pass():
    first = make_trigger(schedule="30 1 * * *", timezone="America/New_York")
    assert shown(first, "2026-10-31T12:00", 1)[0][2] == [
        "01:30 happens twice on 2026-11-01 (EDT, then EST) -> runs at the first only"]
    second = make_trigger(schedule="30 1 * * *", timezone="America/New_York",
                          dst=DstPolicy(repeat="second"))
    assert shown(second, "2026-10-31T12:00", 1) == [(
        "2026-11-01 01:30 EST", "2026-11-01T06:30Z",
        ["01:30 happens twice on 2026-11-01 (EDT, then EST) -> runs at the second only"])]


def test_calendar_exclusions_are_named():
    holidays = Calendar("holidays", exclude=frozenset({date(2026, 12, 25)}))
    workdays = Calendar("workdays", frozenset(range(5)), include=(holidays,))
    trigger = make_trigger(schedule="0 9 * * *", timezone="Europe/Berlin", calendar=workdays)
    assert shown(trigger, "2026-12-24T12:00", 1) == [(
        "2026-12-28 09:00 CET", "2026-12-28T08:00Z",
        ["skipped 2026-12-25: excluded by calendar holidays",
         "skipped 2026-12-26, 2026-12-27: excluded by calendar workdays"])]
    interval = make_trigger(every="12h", timezone="Europe/Berlin", calendar=workdays)
    assert shown(interval, "2026-12-24T13:00", 1)[0][2] == [
        "skipped 2026-12-25: excluded by calendar holidays",
        "skipped 2026-12-26, 2026-12-27: excluded by calendar workdays"]


def test_business_day_note():
    holidays = Calendar("de", frozenset(range(5)), frozenset({date(2027, 1, 1)}))
    trigger = make_trigger(schedule="0 8 * * *", timezone="Europe/Berlin", calendar=holidays,
                           business_day=(1,))
    assert shown(trigger, "2026-12-31T12:00", 1)[0][2] == [
        "business day 1 of 2027-01; not counted: 2027-01-01 (excluded by calendar de)"]


def test_never_fires():
    assert never_fires(make_trigger(schedule="0 0 31 2 *"), utc("2026-01-01T00:00")) == \
        "cron '0 0 31 2 *' (UTC) never fires (no fire in the next 28 years)"
    assert never_fires(make_trigger(at="2026-01-01T00:00"), utc("2026-06-01T00:00")) == \
        "at 2026-01-01T00:00 (UTC) is in the past: it will not fire"
    assert never_fires(make_trigger(schedule="0 0 * * *"), utc("2026-01-01T00:00")) is None


def test_forecast_merges_jobs_in_time_order():
    def job(name: str, **kw) -> Job:
        return Job(name, ("/bin/true",), make_trigger(**kw), agent="a")

    jobs = [job("b-hourly", schedule="0 * * * *"), job("a-half", schedule="30 * * * *"),
            job("c-also-hourly", schedule="0 * * * *")]
    chosen, truncated = forecast(jobs, utc("2026-12-01T00:00"), utc("2026-12-01T01:00"), 10)
    assert not truncated
    assert [(j.name, f.at.strftime("%H:%M")) for j, f in chosen] == [
        ("a-half", "00:30"), ("b-hourly", "01:00"), ("c-also-hourly", "01:00")]
    chosen, truncated = forecast(jobs, utc("2026-12-01T00:00"), utc("2026-12-01T01:00"), 2)
    assert truncated and len(chosen) == 2
