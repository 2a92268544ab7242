"""Cost of a cron trigger's next fire (what the planner asks after every fire), in CPU time.

    python bench/triggers.py [--calls 3000]

Our next_after against croniter's get_next on the same expressions and zones, in the same run
(croniter is the baseline: it answers the same question, with its own DST handling). Two mixes:
ordinary days, and the hours around a fall-back, where a repeated hour makes the walk look back.
Figures only; the best of five passes, each from a different year (no cache hits between passes).
"""

from __future__ import annotations

import argparse
import time
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from croniter import croniter

from scheduler.triggers import make_trigger

SCHEDULES = ["*/5 * * * *", "0 * * * *", "30 2 * * *", "0 9 * * mon-fri", "15 */4 * * *",
             "*/15 8-18 * * 1-5"]
ZONES = ["UTC", "Europe/Berlin", "America/New_York"]
FALL_BACK = [datetime(2026, 10, 24, 22, tzinfo=UTC), datetime(2027, 10, 30, 22, tzinfo=UTC),
             datetime(2028, 10, 28, 22, tzinfo=UTC), datetime(2029, 10, 27, 22, tzinfo=UTC),
             datetime(2030, 10, 26, 22, tzinfo=UTC)]  # Berlin falls back at 01:00Z next day


def ours(expr: str, tz: str, start: datetime, calls: int) -> float:
    trigger = make_trigger(schedule=expr, timezone=tz)
    t, began = start, time.process_time()
    for _ in range(calls):
        t = trigger.next_after(t)
    return time.process_time() - began


def theirs(expr: str, tz: str, start: datetime, calls: int) -> float:
    it = croniter(expr, start.astimezone(ZoneInfo(tz)))
    began = time.process_time()
    for _ in range(calls):
        it.get_next(datetime)
    return time.process_time() - began


def best(measure, cases: list[tuple[str, str]], calls: int, before: timedelta) -> float:
    """Microseconds per call: the best of five passes, each from `before` a fall-back."""
    passes = [sum(measure(e, z, start - before, calls) for e, z in cases) for start in FALL_BACK]
    return min(passes) / (calls * len(cases)) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=3000, help="next fires per expression")
    calls = parser.parse_args().calls
    mixes = [
        ("mixed schedules and zones, from 30 days before a fall-back",
         [(e, z) for e in SCHEDULES for z in ZONES], calls, timedelta(days=30)),
        ("every minute / 5 min, Berlin, from 3 h before a fall-back (300 fires)",
         [("* * * * *", "Europe/Berlin"), ("*/5 * * * *", "Europe/Berlin")], 300, timedelta(0)),
    ]
    for title, cases, n, before in mixes:
        base = best(theirs, cases, n, before)
        mine = best(ours, cases, n, before)
        print(f"{title}:\n  croniter get_next (baseline): {base:7.1f} us/call\n"
              f"  hasched next_after:           {mine:7.1f} us/call = {mine / base:.2f} x baseline")


if __name__ == "__main__":
    main()
