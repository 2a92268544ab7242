"""What fires when across DST: exact UTC lists in four zones, both transitions, 2026-2028.

Transitions used (UTC):
  Europe/Berlin        spring 2026-03-29, 2027-03-28, 2028-03-26 01:00 (02:00 CET -> 03:00 CEST)
                       fall   2026-10-25, 2027-10-31, 2028-10-29 01:00 (03:00 CEST -> 02:00 CET)
  America/New_York     spring 2026-03-08, 2027-03-14, 2028-03-12 07:00 (02:00 EST -> 03:00 EDT)
                       fall   2026-11-01, 2027-11-07, 2028-11-05 06:00 (02:00 EDT -> 01:00 EST)
  Australia/Lord_Howe  spring 2026-10-03, 2027-10-02, 2028-09-30 15:30 (02:00 +1030 -> 02:30 +11)
                       fall   2026-04-04, 2027-04-03, 2028-04-01 15:00 (02:00 +11 -> 01:30 +1030)
  America/Santiago     spring 2026-09-06, 2027-09-05, 2028-09-03 04:00 (00:00 -04 -> 01:00 -03)
                       fall   2026-04-05, 2027-04-04, 2028-04-02 03:00 (00:00 -03 -> 23:00 -04,
                              the day before)
"""

from datetime import UTC, datetime

import pytest

from scheduler.triggers import DstPolicy, make_trigger

pytestmark = pytest.mark.unit


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def fires(expr: str, tz: str, start: str, end: str, **kw) -> list[str]:
    trigger = make_trigger(schedule=expr, timezone=tz, **kw)
    return [f.strftime("%Y-%m-%dT%H:%M") for f in trigger.fires_between(utc(start), utc(end))]


# (expression, zone, window start, window end (UTC), expected fires (UTC))
CASES = [
    # -- the examples -------------------------------------------------------------------
    # real time: the repeated 01:xx happens twice, so a 15-minute rhythm gives 8
    ("*/15 1 * * *", "America/New_York", "2026-11-01T00:00", "2026-11-01T12:00",
     ["2026-11-01T05:00", "2026-11-01T05:15", "2026-11-01T05:30", "2026-11-01T05:45",
      "2026-11-01T06:00", "2026-11-01T06:15", "2026-11-01T06:30", "2026-11-01T06:45"]),
    # the second 02:00 (CET, 01:00Z) is a real occurrence of 02:00
    ("0 */2 * * *", "Europe/Berlin", "2026-10-24T21:00", "2026-10-25T04:00",
     ["2026-10-24T22:00", "2026-10-25T00:00", "2026-10-25T01:00", "2026-10-25T03:00"]),
    # 02:00 does not exist: no catch-up at 02:30 (15:30Z), the next hourly run is 03:00
    ("0 * * * *", "Australia/Lord_Howe", "2026-10-03T13:00", "2026-10-03T17:00",
     ["2026-10-03T13:30", "2026-10-03T14:30", "2026-10-03T16:00", "2026-10-03T17:00"]),
    # 02:04 on Sunday does not exist: nothing at 01:00Z
    ("4 * * * 0,6", "Europe/Berlin", "2026-03-28T23:30", "2026-03-29T01:30",
     ["2026-03-29T00:04", "2026-03-29T01:04"]),
    # fixed time: 02:30 does not exist on 2027-03-28 -> 03:00 CEST
    ("30 2 * * *", "Europe/Berlin", "2027-03-27T00:00", "2027-03-30T00:00",
     ["2027-03-27T01:30", "2027-03-28T01:00", "2027-03-29T00:30"]),
    ("0 0 * * *", "America/Santiago", "2026-09-04T12:00", "2026-09-07T12:00",
     ["2026-09-05T04:00", "2026-09-06T04:00", "2026-09-07T03:00"]),
    ("15 2 * * *", "Australia/Lord_Howe", "2026-10-02T00:00", "2026-10-05T00:00",
     ["2026-10-02T15:45", "2026-10-03T15:30", "2026-10-04T15:15"]),
    # -- Europe/Berlin ---------------------------------------------------------------------------
    ("30 2 * * *", "Europe/Berlin", "2027-10-30T00:00", "2027-11-02T00:00",
     ["2027-10-30T00:30", "2027-10-31T00:30", "2027-11-01T01:30"]),  # first pass (CEST) only
    ("0 */2 * * *", "Europe/Berlin", "2026-03-28T22:00", "2026-03-29T03:00",
     ["2026-03-28T23:00", "2026-03-29T02:00"]),  # 02:00 skipped, no catch-up
    ("*/15 * * * *", "Europe/Berlin", "2027-03-28T00:40", "2027-03-28T01:20",
     ["2027-03-28T00:45", "2027-03-28T01:00", "2027-03-28T01:15"]),
    # 0-23 is a fixed-time hour field: the repeated 02:00 runs once, a skipped one after the gap
    ("0 0-23 * * *", "Europe/Berlin", "2028-10-28T22:30", "2028-10-29T02:30",
     ["2028-10-28T23:00", "2028-10-29T00:00", "2028-10-29T02:00"]),
    ("0 * * * *", "Europe/Berlin", "2028-10-28T22:30", "2028-10-29T02:30",
     ["2028-10-28T23:00", "2028-10-29T00:00", "2028-10-29T01:00", "2028-10-29T02:00"]),
    ("30 0-23 * * *", "Europe/Berlin", "2028-03-26T00:00", "2028-03-26T02:00",
     ["2028-03-26T00:30", "2028-03-26T01:00", "2028-03-26T01:30"]),
    ("30 * * * *", "Europe/Berlin", "2028-03-26T00:00", "2028-03-26T02:00",
     ["2028-03-26T00:30", "2028-03-26T01:30"]),
    # -- America/New_York ------------------------------------------------------------------------
    ("*/15 1 * * *", "America/New_York", "2026-03-08T00:00", "2026-03-08T12:00",
     ["2026-03-08T06:00", "2026-03-08T06:15", "2026-03-08T06:30", "2026-03-08T06:45"]),
    ("*/15 2 * * *", "America/New_York", "2027-03-13T00:00", "2027-03-16T00:00",
     ["2027-03-13T07:00", "2027-03-13T07:15", "2027-03-13T07:30", "2027-03-13T07:45",
      # 2027-03-14: 02:xx does not exist
      "2027-03-15T06:00", "2027-03-15T06:15", "2027-03-15T06:30", "2027-03-15T06:45"]),
    ("30 2 * * *", "America/New_York", "2028-03-11T00:00", "2028-03-14T00:00",
     ["2028-03-11T07:30", "2028-03-12T07:00", "2028-03-13T06:30"]),
    ("30 1 * * *", "America/New_York", "2027-11-06T00:00", "2027-11-09T00:00",
     ["2027-11-06T05:30", "2027-11-07T05:30", "2027-11-08T06:30"]),
    ("0 1 * * *", "America/New_York", "2028-11-05T04:30", "2028-11-05T08:30",
     ["2028-11-05T05:00"]),
    ("0 * * * *", "America/New_York", "2028-11-05T04:30", "2028-11-05T08:30",
     ["2028-11-05T05:00", "2028-11-05T06:00", "2028-11-05T07:00", "2028-11-05T08:00"]),
    # -- Australia/Lord_Howe (a 30-minute shift) -------------------------------------------------
    ("15 2 * * *", "Australia/Lord_Howe", "2027-10-01T00:00", "2027-10-04T00:00",
     ["2027-10-01T15:45", "2027-10-02T15:30", "2027-10-03T15:15"]),
    ("45 2 * * *", "Australia/Lord_Howe", "2027-10-01T00:00", "2027-10-04T00:00",
     ["2027-10-01T16:15", "2027-10-02T15:45", "2027-10-03T15:45"]),  # 02:45 exists
    ("*/15 * * * *", "Australia/Lord_Howe", "2026-04-04T14:20", "2026-04-04T15:50",
     ["2026-04-04T14:30", "2026-04-04T14:45",  # 01:30, 01:45 (+11)
      "2026-04-04T15:00", "2026-04-04T15:15",  # 01:30, 01:45 again (+1030)
      "2026-04-04T15:30", "2026-04-04T15:45"]),
    ("45 1 * * *", "Australia/Lord_Howe", "2028-03-31T00:00", "2028-04-03T00:00",
     ["2028-03-31T14:45", "2028-04-01T14:45", "2028-04-02T15:15"]),
    ("0 * * * *", "Australia/Lord_Howe", "2028-04-01T13:30", "2028-04-01T16:40",
     ["2028-04-01T14:00", "2028-04-01T15:30", "2028-04-01T16:30"]),  # 02:00 happens once
    ("0 * * * *", "Australia/Lord_Howe", "2028-09-30T13:00", "2028-09-30T17:00",
     ["2028-09-30T13:30", "2028-09-30T14:30", "2028-09-30T16:00", "2028-09-30T17:00"]),
    # -- America/Santiago (the shift is at midnight) ---------------------------------------------
    ("0 0 * * *", "America/Santiago", "2027-04-02T12:00", "2027-04-05T12:00",
     ["2027-04-03T03:00", "2027-04-04T04:00", "2027-04-05T04:00"]),
    ("30 23 * * *", "America/Santiago", "2027-04-02T12:00", "2027-04-05T12:00",
     ["2027-04-03T02:30", "2027-04-04T02:30", "2027-04-05T03:30"]),  # 23:30 on 04-03: first
    ("*/30 23 * * *", "America/Santiago", "2028-04-02T01:00", "2028-04-02T04:10",
     ["2028-04-02T02:00", "2028-04-02T02:30", "2028-04-02T03:00", "2028-04-02T03:30"]),
    ("*/30 0 * * *", "America/Santiago", "2028-09-02T00:00", "2028-09-05T00:00",
     ["2028-09-02T04:00", "2028-09-02T04:30", "2028-09-04T03:00", "2028-09-04T03:30"]),
    ("0 0 * * *", "America/Santiago", "2027-09-03T12:00", "2027-09-06T12:00",
     ["2027-09-04T04:00", "2027-09-05T04:00", "2027-09-06T03:00"]),
]


@pytest.mark.parametrize("expr, tz, start, end, expected", CASES,
                         ids=[f"{c[1]}:{c[0]}:{c[2][:10]}" for c in CASES])
def test_vixie_rule_exact(expr, tz, start, end, expected):
    assert fires(expr, tz, start, end) == expected


# -- the per-job dst setting ---------------------------------------------------------------------

@pytest.mark.parametrize("expr, tz, dst, start, end, expected", [
    ("30 1 * * *", "America/New_York", DstPolicy(repeat="second"),
     "2026-11-01T00:00", "2026-11-02T00:00", ["2026-11-01T06:30"]),
    ("30 1 * * *", "America/New_York", DstPolicy(repeat="both"),
     "2026-11-01T00:00", "2026-11-02T00:00", ["2026-11-01T05:30", "2026-11-01T06:30"]),
    ("30 2 * * *", "America/New_York", DstPolicy(gap="skip"),
     "2028-03-11T00:00", "2028-03-14T00:00", ["2028-03-11T07:30", "2028-03-13T06:30"]),
    # a real-time schedule told to catch up: 02:00 and 02:30 fire once, at 03:00 EDT
    ("*/30 2 * * *", "America/New_York", DstPolicy(gap="after"),
     "2027-03-14T00:00", "2027-03-15T00:00", ["2027-03-14T07:00"]),
    ("*/20 1 * * *", "America/New_York", DstPolicy(repeat="first"),
     "2026-11-01T00:00", "2026-11-02T00:00",
     ["2026-11-01T05:00", "2026-11-01T05:20", "2026-11-01T05:40"]),
    ("*/20 1 * * *", "America/New_York", DstPolicy(repeat="second"),
     "2026-11-01T00:00", "2026-11-02T00:00",
     ["2026-11-01T06:00", "2026-11-01T06:20", "2026-11-01T06:40"]),
    # only `gap` given: the repeat keeps the rule's default (first, for a fixed time)
    ("30 2 * * *", "Europe/Berlin", DstPolicy(gap="skip"),
     "2026-10-24T00:00", "2026-10-26T00:00", ["2026-10-24T00:30", "2026-10-25T00:30"]),
    # second pass of a Lord Howe half hour
    ("45 1 * * *", "Australia/Lord_Howe", DstPolicy(repeat="second"),
     "2028-04-01T00:00", "2028-04-02T00:00", ["2028-04-01T15:15"]),
    ("30 23 * * *", "America/Santiago", DstPolicy(repeat="both"),
     "2026-04-04T12:00", "2026-04-05T12:00", ["2026-04-05T02:30", "2026-04-05T03:30"]),
])
def test_dst_setting(expr, tz, dst, start, end, expected):
    assert fires(expr, tz, start, end, dst=dst) == expected


def test_second_pass_only_is_found_from_inside_the_repeated_hour():
    """next_after from between the two passes: the second pass of 01:30 is still ahead."""
    trigger = make_trigger(schedule="30 1 * * *", timezone="America/New_York",
                           dst=DstPolicy(repeat="second"))
    assert trigger.next_after(utc("2026-11-01T05:45")) == utc("2026-11-01T06:30")
    both = make_trigger(schedule="30 1 * * *", timezone="America/New_York",
                        dst=DstPolicy(repeat="both"))
    assert both.next_after(utc("2026-11-01T05:30")) == utc("2026-11-01T06:30")


def test_once_follows_its_dst_setting():
    gap = "2027-03-28T02:30"
    assert make_trigger(at=gap, timezone="Europe/Berlin").next_after(
        utc("2027-01-01T00:00")) == utc("2027-03-28T01:00")
    assert make_trigger(at=gap, timezone="Europe/Berlin", dst=DstPolicy(gap="skip")).next_after(
        utc("2027-01-01T00:00")) is None
    twice = make_trigger(at="2027-10-31T02:30", timezone="Europe/Berlin",
                         dst=DstPolicy(repeat="both"))
    assert list(twice.fires_between(utc("2027-01-01T00:00"), utc("2028-01-01T00:00"))) == [
        utc("2027-10-31T00:30"), utc("2027-10-31T01:30")]


def test_dst_setting_is_checked():
    with pytest.raises(ValueError, match=r"^dst.gap: must be one of: after, skip; got 'later'$"):
        DstPolicy(gap="later")
    with pytest.raises(ValueError, match=r"^dst applies to schedule and at"):
        make_trigger(every="1h", dst=DstPolicy(gap="skip"))


# -- random expressions against a slow reference -------------------------------------------------
#
# The reference reads the rule literally, one UTC minute at a time, and knows what each random
# field means from how it was generated, not from the parser under test:
#   a wall time that happens once fires when it matches;
#   a repeated wall time fires on the pass(es) the policy keeps (rule: real time -> both,
#   fixed time -> first);
#   at the first minute after a spring-forward jump, if any skipped wall time matched, the
#   policy's gap decides (rule: real time -> nothing, fixed time -> fire once now).

import calendar as gregorian  # noqa: E402
import os  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from datetime import timedelta  # noqa: E402
from zoneinfo import ZoneInfo  # noqa: E402

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

settings.register_profile("unit", max_examples=150, deadline=None, database=None,
                          derandomize=True, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("thorough", max_examples=5000, deadline=None, database=None,
                          suppress_health_check=[HealthCheck.too_slow])
PROFILE = os.environ.get("HASCHED_HYPOTHESIS", "unit")  # "thorough" for a long local run

TRANSITIONS = {
    "Europe/Berlin": ["2026-03-29T01:00", "2026-10-25T01:00", "2027-03-28T01:00",
                      "2027-10-31T01:00", "2028-03-26T01:00", "2028-10-29T01:00"],
    "America/New_York": ["2026-03-08T07:00", "2026-11-01T06:00", "2027-03-14T07:00",
                         "2027-11-07T06:00", "2028-03-12T07:00", "2028-11-05T06:00"],
    "Australia/Lord_Howe": ["2026-04-04T15:00", "2026-10-03T15:30", "2027-04-03T15:00",
                            "2027-10-02T15:30", "2028-04-01T15:00", "2028-09-30T15:30"],
    "America/Santiago": ["2026-04-05T03:00", "2026-09-06T04:00", "2027-04-04T03:00",
                         "2027-09-05T04:00", "2028-04-02T03:00", "2028-09-03T04:00"],
}
MINUTE = timedelta(minutes=1)
WINDOW = timedelta(hours=14)  # each side of the transition


@dataclass(frozen=True)
class Field:
    text: str
    values: frozenset[int]


def _field(low: int, high: int, hot: list[int]) -> st.SearchStrategy[Field]:
    """One cron field: *, */n, n, a-b, a-b/n, or a list; `hot` values (near DST) are likelier."""
    value = st.one_of(st.sampled_from(hot), st.integers(low, high))

    @st.composite
    def build(draw) -> Field:
        kind = draw(st.sampled_from(["*", "*/n", "n", "range", "step", "list"]))
        if kind == "*":
            return Field("*", frozenset(range(low, high + 1)))
        if kind == "*/n":
            n = draw(st.integers(1, 30 if high == 59 else 12))
            return Field(f"*/{n}", frozenset(range(low, high + 1, n)))
        if kind == "n":
            v = draw(value)
            return Field(str(v), frozenset({v}))
        if kind == "list":
            vs = sorted(draw(st.sets(value, min_size=2, max_size=4)))
            return Field(",".join(map(str, vs)), frozenset(vs))
        a = draw(value)
        b = draw(st.integers(a, high))
        n = draw(st.integers(1, 5)) if kind == "step" else 1
        text = f"{a}-{b}" + (f"/{n}" if kind == "step" else "")
        return Field(text, frozenset(range(a, b + 1, n)))

    return build()


MINUTES = _field(0, 59, [0, 15, 30, 45, 59])
HOURS = _field(0, 23, [0, 1, 2, 3, 22, 23])


@st.composite
def day_fields(draw) -> tuple[str, str, object]:
    """Day-of-month and day-of-week texts and a predicate on dates, by Vixie's OR rule."""
    dom_kind = draw(st.sampled_from(["*", "*", "*", "L", "LW", "n", "nW"]))
    dow_kind = draw(st.sampled_from(["*", "*", "*", "list", "n#k", "nL"]))
    n = draw(st.integers(1, 31))
    wd = draw(st.integers(0, 6))  # cron numbering: 0 = Sunday
    k = draw(st.integers(1, 5))
    wds = draw(st.sets(st.integers(0, 6), min_size=1, max_size=4))

    def last(d):
        return gregorian.monthrange(d.year, d.month)[1]

    def weekday_near(d, target):
        if target > last(d):
            return False
        for delta in (0, -1, 1, -2, 2):  # Sat -> Fri (or Mon if the 1st), Sun -> Mon (or Fri)
            day = target + delta
            if 1 <= day <= last(d) and d.replace(day=day).weekday() < 5:
                # the nearest weekday, not leaving the month
                if delta == 0 or d.replace(day=target).weekday() >= 5:
                    return d.day == day
        return False

    cron_wd = (wd - 1) % 7  # date.weekday() numbering
    dom = {"*": ("*", lambda d: True), "L": ("L", lambda d: d.day == last(d)),
           "LW": ("LW", lambda d: weekday_near(d, last(d))),
           "n": (str(n), lambda d: d.day == n), "nW": (f"{n}W", lambda d: weekday_near(d, n))}
    dow = {"*": ("*", lambda d: True),
           "list": (",".join(map(str, sorted(wds))),
                    lambda d: (d.weekday() + 1) % 7 in wds),
           "n#k": (f"{wd}#{k}", lambda d: d.weekday() == cron_wd and (d.day - 1) // 7 + 1 == k),
           "nL": (f"{wd}L", lambda d: d.weekday() == cron_wd and d.day + 7 > last(d))}
    (dom_text, dom_ok), (dow_text, dow_ok) = dom[dom_kind], dow[dow_kind]
    if dom_kind != "*" and dow_kind != "*":
        return dom_text, dow_text, lambda d: dom_ok(d) or dow_ok(d)
    return dom_text, dow_text, lambda d: dom_ok(d) and dow_ok(d)


def reference(tz: ZoneInfo, minutes: Field, hours: Field, day_ok, policy: DstPolicy,  # noqa: PLR0913 - each part of the expression on its own: independent of CronSpec
              start: datetime, end: datetime) -> list[datetime]:
    def matches(wall: datetime) -> bool:
        return wall.minute in minutes.values and wall.hour in hours.values and day_ok(wall.date())

    expected = []
    u = start
    while u <= end:
        local = u.astimezone(tz)
        wall = local.replace(tzinfo=None)
        repeated = wall.replace(tzinfo=tz, fold=0).utcoffset() != \
            wall.replace(tzinfo=tz, fold=1).utcoffset()
        keep = {"first": (0,), "second": (1,), "both": (0, 1)}[policy.repeat]
        fire = matches(wall) and (not repeated or local.fold in keep)
        before = (u - MINUTE).astimezone(tz)
        if local.utcoffset() > before.utcoffset() and policy.gap == "after":  # u ends a gap
            skipped = before.replace(tzinfo=None) + MINUTE
            while skipped < wall:
                fire = fire or matches(skipped)
                skipped += MINUTE
        if fire:
            expected.append(u)
        u += MINUTE
    return expected


@settings(settings.get_profile(PROFILE))
@given(tz_name=st.sampled_from(sorted(TRANSITIONS)), which=st.integers(0, 5),
       minutes=MINUTES, hours=HOURS, days=day_fields(),
       gap=st.sampled_from([None, None, "after", "skip"]),
       repeat=st.sampled_from([None, None, "first", "second", "both"]),
       probe=st.integers(0, 2 * int(WINDOW.total_seconds())))
def test_random_expressions_match_the_reference(tz_name, which, minutes, hours, days, gap,  # noqa: PLR0913 - hypothesis passes one drawn value per argument
                                                repeat, probe):
    dom, dow, day_ok = days
    expr = f"{minutes.text} {hours.text} {dom} * {dow}"
    tz = ZoneInfo(tz_name)
    shift = utc(TRANSITIONS[tz_name][which])
    start, end = shift - WINDOW, shift + WINDOW
    real_time = minutes.text.startswith("*") or hours.text.startswith("*")
    dst = DstPolicy(gap, repeat)
    expected = reference(tz, minutes, hours, day_ok, dst.resolved(real_time), start, end)
    trigger = make_trigger(schedule=expr, timezone=tz_name, dst=dst)
    assert list(trigger.fires_between(start - MINUTE, end)) == expected, expr
    # next_after from any instant (seconds too) is the first reference fire after it
    t = start + timedelta(seconds=probe)
    following = [f for f in expected if f > t]
    if following:
        assert trigger.next_after(t) == following[0], (expr, t)
