from datetime import UTC, date, datetime

import pytest

from scheduler.calendars import Calendar, load_calendars
from scheduler.config import ConfigError
from scheduler.triggers import (
    CronTrigger,
    IntervalTrigger,
    OnceTrigger,
    make_trigger,
    parse_cron,
)

pytestmark = pytest.mark.unit


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def fires(trigger, start: str, end: str) -> list[str]:
    return [f.strftime("%Y-%m-%dT%H:%M") for f in trigger.fires_between(utc(start), utc(end))]


# --- DST: Europe/Berlin 2026-03-29 01:00Z (02:00 CET -> 03:00 CEST),
#          2026-10-25 01:00Z (03:00 CEST -> 02:00 CET)
#          America/New_York 2026-03-08 07:00Z (02:00 EST -> 03:00 EDT),
#          2026-11-01 06:00Z (02:00 EDT -> 01:00 EST)

def test_every_15_minutes_berlin_spring_forward_has_no_double():
    trigger = make_trigger(schedule="*/15 * * * *", timezone="Europe/Berlin")
    assert fires(trigger, "2026-03-29T00:20", "2026-03-29T01:40") == [
        "2026-03-29T00:30", "2026-03-29T00:45",  # 01:30, 01:45 CET
        "2026-03-29T01:00",  # 02:00..02:45 skipped wall times and 03:00 CEST: one instant, once
        "2026-03-29T01:15", "2026-03-29T01:30",
    ]


def test_every_15_minutes_berlin_fall_back_keeps_real_rhythm():
    trigger = make_trigger(schedule="*/15 * * * *", timezone="Europe/Berlin")
    assert fires(trigger, "2026-10-24T23:50", "2026-10-25T02:10") == [
        "2026-10-25T00:00", "2026-10-25T00:15", "2026-10-25T00:30", "2026-10-25T00:45",  # CEST
        "2026-10-25T01:00", "2026-10-25T01:15", "2026-10-25T01:30", "2026-10-25T01:45",  # CET
        "2026-10-25T02:00",
    ]


def test_every_15_minutes_new_york_both_transitions():
    trigger = make_trigger(schedule="*/15 * * * *", timezone="America/New_York")
    assert fires(trigger, "2026-03-08T06:35", "2026-03-08T07:20") == [
        "2026-03-08T06:45", "2026-03-08T07:00", "2026-03-08T07:15"]
    assert fires(trigger, "2026-11-01T04:50", "2026-11-01T07:05") == [
        "2026-11-01T05:00", "2026-11-01T05:15", "2026-11-01T05:30", "2026-11-01T05:45",  # EDT
        "2026-11-01T06:00", "2026-11-01T06:15", "2026-11-01T06:30", "2026-11-01T06:45",  # EST
        "2026-11-01T07:00",
    ]


def test_daily_0230_berlin_gap_fires_after_gap_and_repeat_fires_once():
    trigger = make_trigger(schedule="30 2 * * *", timezone="Europe/Berlin")
    assert fires(trigger, "2026-03-27T00:00", "2026-03-31T00:00") == [
        "2026-03-27T01:30", "2026-03-28T01:30",
        "2026-03-29T01:00",  # 02:30 does not exist: 03:00 CEST
        "2026-03-30T00:30"]
    assert fires(trigger, "2026-10-23T00:00", "2026-10-27T00:00") == [
        "2026-10-23T00:30", "2026-10-24T00:30",
        "2026-10-25T00:30",  # 02:30 happens twice: the first (CEST) only
        "2026-10-26T01:30"]


def test_daily_0130_new_york_both_transition_days():
    trigger = make_trigger(schedule="30 1 * * *", timezone="America/New_York")
    assert fires(trigger, "2026-03-07T00:00", "2026-03-10T00:00") == [
        "2026-03-07T06:30", "2026-03-08T06:30", "2026-03-09T05:30"]
    assert fires(trigger, "2026-10-31T00:00", "2026-11-03T00:00") == [
        "2026-10-31T05:30", "2026-11-01T05:30", "2026-11-02T06:30"]


def test_hourly_fires_at_both_occurrences_of_a_repeated_hour():
    trigger = make_trigger(schedule="@hourly", timezone="Europe/Berlin")
    assert fires(trigger, "2026-10-24T23:30", "2026-10-25T02:30") == [
        "2026-10-25T00:00", "2026-10-25T01:00", "2026-10-25T02:00"]


def test_next_after_is_strict_and_utc():
    trigger = make_trigger(schedule="0 9 * * mon-fri", timezone="Europe/Berlin")
    nxt = trigger.next_after(utc("2026-12-04T08:00"))  # Friday 09:00 CET
    assert nxt == utc("2026-12-04T08:00").replace(day=7) and nxt.tzinfo is UTC  # Monday
    assert trigger.next_after(utc("2026-12-03T07:59")) == utc("2026-12-03T08:00")


@pytest.mark.parametrize("expr, start, expected", [
    ("0 0 1,15 * *", "2026-01-01T00:00", ["2026-01-15T00:00", "2026-02-01T00:00"]),
    ("0 12 * jan,jul *", "2026-01-31T00:00", ["2026-01-31T12:00", "2026-07-01T12:00"]),
    ("0 0 13 * fri", "2026-02-01T00:00", ["2026-02-06T00:00", "2026-02-13T00:00"]),  # OR rule
    ("0 0 */10 * fri", "2026-01-01T00:00", ["2026-05-01T00:00", "2026-07-31T00:00"]),  # AND (*)
    ("@weekly", "2026-01-01T00:00", ["2026-01-04T00:00", "2026-01-11T00:00"]),
    ("@monthly", "2026-01-01T00:00", ["2026-02-01T00:00", "2026-03-01T00:00"]),
    ("@yearly", "2026-01-01T00:00", ["2027-01-01T00:00", "2028-01-01T00:00"]),
    ("0 0 29 2 *", "2026-01-01T00:00", ["2028-02-29T00:00", "2032-02-29T00:00"]),
    ("5-10/5 23 * * 7", "2026-01-01T00:00", ["2026-01-04T23:05", "2026-01-04T23:10"]),
    # one-value ranges: croniter 7 alone would expand each of these to the whole field
    ("15-15 * * * *", "2026-01-01T00:00", ["2026-01-01T00:15", "2026-01-01T01:15"]),
    ("3-3/2 0 * * *", "2026-01-01T00:00", ["2026-01-01T00:03", "2026-01-02T00:03"]),
    ("0 0 5-5 * *", "2026-01-01T00:00", ["2026-01-05T00:00", "2026-02-05T00:00"]),
    ("0 0 * jan-jan mon-mon", "2026-01-01T00:00", ["2026-01-05T00:00", "2026-01-12T00:00"]),
])
def test_cron_fields(expr, start, expected):
    trigger = make_trigger(schedule=expr)
    first = trigger.next_after(utc(start))
    assert [f.strftime("%Y-%m-%dT%H:%M") for f in (first, trigger.next_after(first))] == expected


def test_impossible_date_never_fires():
    assert make_trigger(schedule="0 0 31 2 *").next_after(utc("2026-01-01T00:00")) is None


@pytest.mark.parametrize("expr, message", [
    ("* * * *", "not a cron expression: '* * * *' (want 5 fields"),
    ("0 * * * * *", "not a cron expression: '0 * * * * *'"),
    ("@reboot", "not a cron expression: '@reboot'"),
    ("61 * * * *", "bad cron expression '61 * * * *': minute field '61' is out of range: "
                   "61 is not in 0-59"),
    ("0 1-25 * * *", "bad cron expression '0 1-25 * * *': hour field '1-25' is out of range: "
                     "25 is not in 0-23"),
    ("0 0 0 * *", "bad cron expression '0 0 0 * *': day-of-month field '0' is out of range"),
    ("0 0 * 13 *", "bad cron expression '0 0 * 13 *': month field '13' is out of range"),
    ("0 0 * * 8", "bad cron expression '0 0 * * 8': day-of-week field '8' is out of range"),
    ("0 0 L-3 * *", "bad cron expression '0 0 L-3 * *': day-of-month field 'l-3' is not valid"),
    ("0 0 * * 5#6", "bad cron expression '0 0 * * 5#6': day-of-week field '5#6' has a bad '#'"),
    ("0 0 * * L", "bad cron expression '0 0 * * L': day-of-week field 'l' is not valid"),
    ("0 0 32W * *", "bad cron expression '0 0 32W * *': day-of-month field '32w' has '32w': "
                    "W needs a day 1-31"),
    ("0 0 W * *", "bad cron expression '0 0 W * *': day-of-month field 'w' is not valid"),
    ("0 0 * * 9L", "bad cron expression '0 0 * * 9L': day-of-week field '9l' is not valid"),
    ("0 0 * * xyz#2", "bad cron expression '0 0 * * xyz#2': day-of-week field 'xyz#2'"),
    ("0 0 * * mon?", "bad cron expression '0 0 * * mon?'"),
    ("0 0 * jan mo", "bad cron expression '0 0 * jan mo': day-of-week field 'mo' is not valid"),
    ("H * * * *", "bad cron expression 'H * * * *': minute field 'h' is not valid"),
])
def test_cron_is_strict(expr, message):
    with pytest.raises(ValueError) as info:
        parse_cron(expr)
    assert str(info.value).startswith(message)


def test_unknown_time_zone():
    with pytest.raises(ValueError) as info:
        make_trigger(schedule="* * * * *", timezone="Mars/Olympus")
    assert str(info.value) == ("unknown time zone 'Mars/Olympus' "
                               "(use an IANA name like Europe/Berlin)")


def test_exactly_one_kind():
    with pytest.raises(ValueError, match=r"^give exactly one of schedule, every, at \(got "
                                         r"schedule, every\)$"):
        make_trigger(schedule="* * * * *", every="5m")
    with pytest.raises(ValueError, match=r"^give exactly one of schedule, every, at$"):
        make_trigger()


def test_interval_is_anchored_so_restarts_agree():
    trigger = make_trigger(every="7m")
    assert isinstance(trigger, IntervalTrigger)
    first = trigger.next_after(utc("2026-05-05T10:00"))
    assert (first - datetime(1970, 1, 1, tzinfo=UTC)).total_seconds() % 420 == 0
    assert fires(trigger, "2026-05-05T10:00", "2026-05-05T10:20") == [
        "2026-05-05T10:05", "2026-05-05T10:12", "2026-05-05T10:19"]
    # The same answer from any starting point inside the same interval.
    assert trigger.next_after(utc("2026-05-05T09:58:01")) == utc("2026-05-05T10:05")


def test_interval_respects_calendar_by_skipping_days():
    weekdays = Calendar("workdays", frozenset(range(5)), frozenset({date(2026, 12, 25)}))
    trigger = make_trigger(every="12h", timezone="Europe/Berlin", calendar=weekdays)
    # 2026-12-24 Thu, 25 excluded, 26/27 weekend -> next fire Monday 28 00:00 UTC (01:00 CET)
    assert fires(trigger, "2026-12-24T11:00", "2026-12-28T13:00") == [
        "2026-12-24T12:00", "2026-12-28T00:00", "2026-12-28T12:00"]


def test_cron_calendar_skips_not_moves():
    weekdays = Calendar("workdays", frozenset(range(5)), frozenset({date(2026, 12, 25)}))
    trigger = make_trigger(schedule="0 23 * * *", timezone="Europe/Berlin", calendar=weekdays)
    # 23:00 CET = 22:00 UTC; the LOCAL date decides
    assert fires(trigger, "2026-12-24T00:00", "2026-12-29T00:00") == [
        "2026-12-24T22:00", "2026-12-28T22:00"]


def test_once_in_local_time():
    trigger = make_trigger(at="2026-12-01T08:00", timezone="Europe/Berlin")
    assert isinstance(trigger, OnceTrigger)
    assert trigger.next_after(utc("2026-11-30T00:00")) == utc("2026-12-01T07:00")
    assert trigger.next_after(utc("2026-12-01T07:00")) is None
    gap = make_trigger(at="2026-03-29T02:30", timezone="Europe/Berlin")
    assert gap.next_after(utc("2026-01-01T00:00")) == utc("2026-03-29T01:00")
    with pytest.raises(ValueError, match="^not a local date and time: 'tomorrow'"):
        make_trigger(at="tomorrow")


def test_describe_is_one_line():
    assert CronTrigger("30 2 * * *", "Europe/Berlin").describe() == \
        "cron '30 2 * * *' (Europe/Berlin)"
    assert make_trigger(every="90m").describe() == "every 1h30m"
    assert make_trigger(at="2026-12-01T08:00").describe() == "once at 2026-12-01T08:00 (UTC)"


def test_load_calendars(tmp_path):
    path = tmp_path / "calendars.toml"
    path.write_text('[calendars.workdays]\nweekdays = ["mon", "tue", "wed", "thu", "fri"]\n'
                    'exclude = ["2026-12-25", 2026-12-26]\n[calendars.all]\n')
    calendars = load_calendars(path)
    assert calendars["workdays"] == Calendar(
        "workdays", frozenset(range(5)), frozenset({date(2026, 12, 25), date(2026, 12, 26)}))
    assert calendars["workdays"].allows(date(2026, 12, 24))
    assert not calendars["workdays"].allows(date(2026, 12, 25))
    assert not calendars["workdays"].allows(date(2026, 12, 27))  # Sunday
    assert calendars["all"].allows(date(2026, 12, 27))


@pytest.mark.parametrize("text, expected", [
    ('[calendars.w]\nweekdays = ["mon", "funday"]\n',
     "2: calendars.w.weekdays: must be a non-empty list of day names "
     "(mon, tue, wed, thu, fri, sat, sun)"),
    ('[calendars.w]\n\nexclude = ["2026-13-01"]\n',
     "3: calendars.w.exclude: not a date: '2026-13-01' (use YYYY-MM-DD)"),
    ('[calendars.w]\nholidays = []\n',
     "2: calendars.w.holidays: unknown field; expected one of: weekdays, exclude, include"),
])
def test_calendar_errors(tmp_path, text, expected):
    path = tmp_path / "calendars.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_calendars(path)
    assert str(info.value) == f"{path}:{expected}"


def test_utc_matches_croniter_on_random_expressions():
    """In UTC (no DST), our walk over the expanded sets must agree with croniter itself."""
    import random

    from croniter import croniter

    rng = random.Random(7)

    def field(low: int, high: int) -> str:
        kind = rng.choice(["*", "n", "list", "range", "step"])
        if kind == "*":
            return "*"
        if kind == "n":
            return str(rng.randint(low, high))
        if kind == "list":
            return ",".join(str(v) for v in sorted(rng.sample(range(low, high + 1), 3)))
        a = rng.randint(low, high - 1)
        b = rng.randint(a + 1, high)
        return f"{a}-{b}" if kind == "range" else f"{a}-{b}/{rng.randint(1, 3)}"

    for _ in range(150):
        dom, dow = field(1, 28), field(0, 6)  # plain '*' only: the '*/n' quirk is tested above
        expr = f"{field(0, 59)} {field(0, 23)} {dom} {field(1, 12)} {dow}"
        start = utc("2026-01-01T00:00") + (utc("2027-01-01T00:00") - utc("2026-01-01T00:00")) * \
            rng.random()
        ours = make_trigger(schedule=expr).next_after(start)
        theirs = croniter(expr, start).get_next(datetime)
        assert ours == theirs, expr
