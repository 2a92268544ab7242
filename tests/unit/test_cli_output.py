"""Table formatting helpers of the CLI."""

from __future__ import annotations

import pytest

from scheduler.cli.output import cell, duration, print_table, short_time

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("seconds,text", [
    (300.0, "5m"), (5400, "1h30m"), (90061, "1d1h1m1s"), (1.5, "1.5s"), (None, None),
])
def test_duration_as_job_files_write_it(seconds, text):
    assert duration(seconds) == text


@pytest.mark.parametrize("value,text", [
    ("2026-12-01T01:30:00.123456Z", "2026-12-01T01:30:00Z"),
    ("2026-12-01T01:30:00.5+00:00", "2026-12-01T01:30:00+00:00"),
    ("2026-12-01T01:30:00Z", "2026-12-01T01:30:00Z"),
    (None, None),
])
def test_short_time_drops_fractions(value, text):
    assert short_time(value) == text


def test_cells_are_one_line_and_missing_is_a_dash():
    assert cell(None) == "-" and cell(True) == "yes" and cell(["a", "b"]) == "a,b"
    assert cell("two\nlines") == "two lines"


def test_table_columns_align(capsys):
    print_table([{"a": "x", "b": 1}, {"a": "longer", "b": None}],
                [("A", lambda r: r["a"]), ("B", lambda r: r["b"])])
    lines = capsys.readouterr().out.splitlines()
    assert lines == ["A       B", "x       1", "longer  -"]


def test_empty_table_says_so(capsys):
    print_table([], [("A", lambda r: r)], empty="no jobs")
    assert capsys.readouterr().out == "no jobs\n"
