"""Richer calendars: cron's L, LW, 15W, 5#3, 5L; business days; calendars including others."""

import random
from datetime import UTC, date, datetime, timedelta

import pytest
from croniter import croniter

from scheduler.calendars import Calendar, load_calendars
from scheduler.config import ConfigError
from scheduler.jobfiles import load_job_file, load_jobs_dir
from scheduler.triggers import make_trigger

pytestmark = pytest.mark.unit


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def days(expr: str, start: str, end: str, **kw) -> list[str]:
    trigger = make_trigger(schedule=expr, **kw)
    return [f.strftime("%Y-%m-%d") for f in trigger.fires_between(utc(start), utc(end))]


# -- cron day specials (2026-01-01 is a Thursday) ------------------------------------------------

@pytest.mark.parametrize("expr, start, end, expected", [
    ("0 8 L * *", "2026-01-01", "2026-05-01", ["2026-01-31", "2026-02-28", "2026-03-31",
                                               "2026-04-30"]),
    ("0 8 L 2 *", "2026-01-01", "2029-01-01", ["2026-02-28", "2027-02-28", "2028-02-29"]),
    # last weekday: Jan 31 is a Saturday, Feb 28 a Saturday, May 31 a Sunday, Oct 31 a Saturday
    ("0 8 LW * *", "2026-01-01", "2026-06-01", ["2026-01-30", "2026-02-27", "2026-03-31",
                                                "2026-04-30", "2026-05-29"]),
    ("0 8 LW 10 *", "2026-01-01", "2027-01-01", ["2026-10-30"]),
    # nearest weekday: Feb 15 and Mar 15 are Sundays (-> Monday), Aug 15 a Saturday (-> Friday)
    ("0 8 15W * *", "2026-01-01", "2026-04-01", ["2026-01-15", "2026-02-16", "2026-03-16"]),
    ("0 8 15W 8 *", "2026-01-01", "2027-01-01", ["2026-08-14"]),
    # never leaves the month: Aug 1 is a Saturday (-> Monday 3rd, not July 31)
    ("0 8 1W 8 *", "2026-01-01", "2027-01-01", ["2026-08-03"]),
    # May 31 is a Sunday (-> Friday 29th, not June 1); a 30-day month has no 31st
    ("0 8 31W * *", "2026-04-01", "2026-08-01", ["2026-05-29", "2026-07-31"]),
    ("0 8 1W,15W 2 *", "2026-01-01", "2027-01-01", ["2026-02-02", "2026-02-16"]),
    # third Friday
    ("0 8 * * 5#3", "2026-01-01", "2026-04-01", ["2026-01-16", "2026-02-20", "2026-03-20"]),
    ("0 8 * * fri#3", "2026-01-01", "2026-02-01", ["2026-01-16"]),
    # a fifth Monday only in some months
    ("0 8 * * 1#5", "2026-01-01", "2027-01-01", ["2026-03-30", "2026-06-29", "2026-08-31",
                                                 "2026-11-30"]),
    # last Friday, last Sunday (7 and 0 are both Sunday)
    ("0 8 * * 5L", "2026-01-01", "2026-06-01", ["2026-01-30", "2026-02-27", "2026-03-27",
                                                "2026-04-24", "2026-05-29"]),
    ("0 8 * * 7L", "2026-01-01", "2026-03-01", ["2026-01-25", "2026-02-22"]),
    ("0 8 * * 0L", "2026-01-01", "2026-03-01", ["2026-01-25", "2026-02-22"]),
    # both day fields restricted: either matches (Vixie cron)
    ("0 8 L * 1#1", "2026-01-01", "2026-03-01", ["2026-01-05", "2026-01-31", "2026-02-02",
                                                 "2026-02-28"]),
    ("0 8 1,L * *", "2026-01-01", "2026-03-01", ["2026-01-01", "2026-01-31", "2026-02-01",
                                                 "2026-02-28"]),
    ("0 8 * * 1#1,5L", "2026-01-01", "2026-03-01", ["2026-01-05", "2026-01-30", "2026-02-02",
                                                    "2026-02-27"]),
])
def test_day_specials(expr, start, end, expected):
    assert days(expr, start, end) == expected


@pytest.mark.parametrize("ours, croniters", [
    ("0 8 L * *", "0 8 L * *"), ("30 6 15W * *", "30 6 15W * *"), ("0 8 1W * *", "0 8 1W * *"),
    ("0 12 * * 5#3", "0 12 * * 5#3"), ("0 12 * * 2#5", "0 12 * * 2#5"),
    ("0 8 * * 5L", "0 8 * * L5"),  # croniter spells the last Friday L5
])
def test_day_specials_agree_with_croniter(ours, croniters):
    """croniter supports these specials: our matching must give the same fires (UTC)."""
    rng = random.Random(ours)
    trigger = make_trigger(schedule=ours)
    for _ in range(60):
        start = utc("2026-01-01T00:00") + timedelta(days=rng.uniform(0, 3 * 365))
        it = croniter(croniters, start)
        fire = start
        for _ in range(3):
            fire = trigger.next_after(fire)
            assert fire == it.get_next(datetime).replace(tzinfo=UTC), (ours, start)


def test_day_specials_keep_the_dst_rule():
    """A last-Sunday job at 02:30 in Berlin: March's last Sunday is the spring-forward day."""
    trigger = make_trigger(schedule="30 2 * * 0L", timezone="Europe/Berlin")
    assert [f.isoformat() for f in trigger.fires_between(utc("2027-03-01"), utc("2027-05-01"))] \
        == ["2027-03-28T01:00:00+00:00", "2027-04-25T00:30:00+00:00"]


# -- business days -------------------------------------------------------------------------------

HOLIDAYS = Calendar("de", frozenset(range(5)), frozenset({
    date(2026, 12, 24), date(2026, 12, 25), date(2026, 12, 31), date(2027, 1, 1)}))


@pytest.mark.parametrize("n, calendar, expected", [
    ((1,), HOLIDAYS, ["2026-12-01", "2027-01-04", "2027-02-01"]),  # Jan 1 is a holiday
    ((1,), None, ["2026-12-01", "2027-01-01", "2027-02-01"]),  # plain Monday-Friday
    ((-1,), HOLIDAYS, ["2026-12-30", "2027-01-29", "2027-02-26"]),  # Dec 31 is a holiday
    ((-1,), None, ["2026-12-31", "2027-01-29", "2027-02-26"]),
    ((3,), HOLIDAYS, ["2026-12-03", "2027-01-06", "2027-02-03"]),
    ((-3,), HOLIDAYS, ["2026-12-28", "2027-01-27", "2027-02-24"]),  # Dec: ..., 28, 29, 30
    ((1, -1), HOLIDAYS, ["2026-12-01", "2026-12-30", "2027-01-04", "2027-01-29",
                         "2027-02-01", "2027-02-26"]),
    ((20,), HOLIDAYS, ["2026-12-30", "2027-01-29", "2027-02-26"]),  # 20 in each of them here
    ((21,), HOLIDAYS, []),
    ((23,), None, ["2026-12-31"]),  # a 23rd weekday: only in Dec 2026 of these months
])
def test_business_day(n, calendar, expected):
    got = days("0 8 * * *", "2026-12-01", "2027-03-01", timezone="Europe/Berlin",
               calendar=calendar, business_day=n)
    assert got == expected


def test_business_days_follow_the_calendars_weekdays():
    """A Monday-Thursday calendar: Fridays are not business days."""
    mon_thu = Calendar("mon-thu", frozenset(range(4)))
    # Jan 2027: Fri 1 is not a business day; the last is Thu 28
    assert days("0 8 * * *", "2027-01-01", "2027-02-01", calendar=mon_thu,
                business_day=(1, -1)) == ["2027-01-04", "2027-01-28"]


def test_business_day_and_weekday_field():
    """Both must hold: the first business day, when it is a Monday."""
    assert days("0 8 * * 1", "2027-01-01", "2028-01-01", calendar=HOLIDAYS,
                business_day=(1,)) == ["2027-01-04", "2027-02-01", "2027-03-01", "2027-05-03",
                                      "2027-08-02", "2027-11-01"]


def test_business_day_is_checked():
    with pytest.raises(ValueError, match=r"^business_day must be 1..23"):
        make_trigger(schedule="0 8 * * *", business_day=(0,))
    with pytest.raises(ValueError, match=r"^business_day must be 1..23 .*; got 24$"):
        make_trigger(schedule="0 8 * * *", business_day=(24,))
    with pytest.raises(ValueError, match=r"^business_day needs a schedule"):
        make_trigger(every="1h", business_day=(1,))


# -- calendars: include, dates by year -----------------------------------------------------------

CALENDARS = """\
[calendars.public-holidays-de.exclude]
2026 = ["12-25", "12-26"]
2027 = ["01-01", 2027-04-02]

[calendars.workdays-de]
weekdays = ["mon", "tue", "wed", "thu", "fri"]
include = ["public-holidays-de"]
exclude = ["2026-12-24"]

[calendars.berlin-office]
include = ["workdays-de"]
exclude = { 2027 = ["03-08"] }
"""


def test_include_and_dates_by_year(tmp_path):
    path = tmp_path / "calendars.toml"
    path.write_text(CALENDARS)
    calendars = load_calendars(path)
    holidays, workdays, office = (calendars[n] for n in
                                  ("public-holidays-de", "workdays-de", "berlin-office"))
    assert holidays.exclude == {date(2026, 12, 25), date(2026, 12, 26), date(2027, 1, 1),
                                date(2027, 4, 2)}
    assert workdays.allows(date(2026, 12, 23))
    for day, by in [(date(2026, 12, 24), "workdays-de"), (date(2026, 12, 25), "public-holidays-de"),
                    (date(2026, 12, 27), "workdays-de"), (date(2027, 1, 1), "public-holidays-de")]:
        assert not workdays.allows(day)
        assert workdays.excluded_by(day) == by
    # two levels down, and its own dates by year
    assert office.excluded_by(date(2027, 1, 1)) == "public-holidays-de"
    assert office.excluded_by(date(2027, 3, 8)) == "berlin-office"
    assert office.excluded_by(date(2026, 12, 24)) == "workdays-de"
    assert office.allows(date(2027, 3, 9))
    # business days count what the included calendars exclude
    assert days("0 8 * * *", "2027-01-01", "2027-02-01", calendar=office, business_day=(1,)) \
        == ["2027-01-04"]


@pytest.mark.parametrize("text, expected", [
    ('[calendars.a]\ninclude = ["b"]\n',
     "2: calendars.a.include: unknown calendar 'b'; known: a"),
    ('[calendars.a]\ninclude = ["b"]\n[calendars.b]\ninclude = ["a"]\n',
     "2: calendars.a.include: include cycle: a -> b -> a"),
    ('[calendars.a]\ninclude = ["a"]\n',
     "2: calendars.a.include: a calendar cannot include itself"),
    ('[calendars.a]\ninclude = "b"\n',
     '2: calendars.a.include: must be a list of calendar names, '
     'e.g. include = ["public-holidays-de"]'),
    ('[calendars.a.exclude]\n2027 = ["02-29"]\n',
     "2: calendars.a.exclude.2027: not a day of 2027: '02-29' (use MM-DD)"),
    ('[calendars.a.exclude]\n2027 = ["2026-12-25"]\n',
     "2: calendars.a.exclude.2027: '2026-12-25' is not in 2027"),
    ('[calendars.a.exclude]\nnext = ["12-25"]\n',
     "2: calendars.a.exclude.next: not a year (use e.g. 2026)"),
    ('[calendars.a]\nexclude = "2026-12-25"\n',
     '2: calendars.a.exclude: must be a list of dates like "2026-12-25", '
     'or a table of years like { 2026 = ["12-25"] }'),
])
def test_calendar_mistakes_are_one_line(tmp_path, text, expected):
    path = tmp_path / "calendars.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_calendars(path)
    assert str(info.value) == f"{path}:{expected}"


JOB = '[job.j]\ncommand = ["x"]\nschedule = "0 8 * * *"\nagent = "db1"\ncalendar = "office"\n'


def test_include_across_job_files(tmp_path):
    """A calendar in one file includes one defined in a later file; a job uses the first."""
    (tmp_path / "a.toml").write_text(JOB + '[calendars.office]\ninclude = ["holidays"]\n')
    (tmp_path / "b.toml").write_text('[calendars.holidays.exclude]\n2027 = ["01-01"]\n')
    jobs, errors = load_jobs_dir(tmp_path)
    assert errors == []
    calendar = jobs["j"].trigger.calendar
    assert calendar.excluded_by(date(2027, 1, 1)) == "holidays"
    assert jobs["j"].trigger.next_after(utc("2026-12-31T09:00")) == utc("2027-01-02T08:00")


def test_include_of_an_unknown_calendar_in_a_job_file(tmp_path):
    (tmp_path / "a.toml").write_text(JOB + '[calendars.office]\ninclude = ["holidays"]\n')
    jobs, errors = load_jobs_dir(tmp_path)
    assert jobs == {}
    assert [str(e) for e in errors] == [
        f"{tmp_path / 'a.toml'}:5: calendar: unknown calendar 'office'; known: none",
        f"{tmp_path / 'a.toml'}:7: calendars.office.include: unknown calendar 'holidays'; "
        "known: office"]


@pytest.mark.parametrize("extra, expected", [
    ('dst = { gap = "later" }\n', "5: dst.gap: must be one of: after, skip; got 'later'"),
    ('dst = { repeat = 2 }\n', "5: dst.repeat: must be one of: first, second, both; got 2"),
    ('dst = { when = "x" }\n', "5: dst.when: unknown field; expected one of: gap, repeat"),
    ('dst = "skip"\n', "5: dst: must be a table like { gap = ... }"),
    ('business_day = 0\n', "5: business_day: must be 1..23 (the Nth business day of the month), "
                           "-1..-23 (counted from its end) or a list of them; got 0"),
    ('business_day = ["first"]\n', "5: business_day: must be 1..23 (the Nth business day of the "
                                   "month), -1..-23 (counted from its end) or a list of them; "
                                   "got 'first'"),
])
def test_job_file_dst_and_business_day_mistakes(tmp_path, extra, expected):
    path = tmp_path / "a.toml"
    path.write_text('[job.j]\ncommand = ["x"]\nschedule = "0 8 * * *"\nagent = "db1"\n' + extra)
    jobs, errors = load_job_file(path)
    assert jobs == [] and [str(e) for e in errors] == [f"{path}:{expected}"]


@pytest.mark.parametrize("extra, expected", [
    ('dst = { gap = "skip" }\n',
     "5: dst: applies to schedule and at; an interval counts real time"),
    ('business_day = 1\n',
     "5: business_day: needs a schedule (a cron expression such as \"0 8 * * *\")"),
])
def test_job_file_settings_that_need_a_schedule(tmp_path, extra, expected):
    path = tmp_path / "a.toml"
    path.write_text('[job.j]\ncommand = ["x"]\nevery = "1h"\nagent = "db1"\n' + extra)
    jobs, errors = load_job_file(path)
    assert jobs == [] and [str(e) for e in errors] == [f"{path}:{expected}"]


def test_job_file_dst_and_business_day_load(tmp_path):
    path = tmp_path / "a.toml"
    path.write_text('[job.j]\ncommand = ["x"]\nschedule = "*/30 2 * * *"\nagent = "db1"\n'
                    'timezone = "America/New_York"\ndst = { gap = "after" }\n'
                    'business_day = [1, -1]\n')
    (job,), errors = load_job_file(path)
    assert errors == []
    assert job.trigger.business_day == (-1, 1)
    # 2027-03-01 is the first business day of March, 2027-03-31 the last; the spring-forward
    # day (03-14) is neither, so the gap="after" matters only on the days it fires
    assert job.trigger.policy.gap == "after" and job.trigger.policy.repeat == "both"
    assert [f.strftime("%m-%dT%H:%M") for f in job.trigger.fires_between(
        utc("2027-03-01"), utc("2027-04-01"))] == [
        "03-01T07:00", "03-01T07:30", "03-31T06:00", "03-31T06:30"]


def test_job_file_reports_a_bad_dst_and_a_bad_schedule_together(tmp_path):
    path = tmp_path / "a.toml"
    path.write_text('[job.j]\ncommand = ["x"]\nschedule = "0 0 L-1 * *"\nagent = "db1"\n'
                    'dst = { gap = "later" }\n')
    jobs, errors = load_job_file(path)
    assert sorted(str(e) for e in errors) == [
        f"{path}:3: schedule: bad cron expression '0 0 L-1 * *': day-of-month field 'l-1' is "
        "not valid",
        f"{path}:5: dst.gap: must be one of: after, skip; got 'later'"]
