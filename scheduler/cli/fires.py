"""`hasched jobs next` and `hasched jobs forecast`: when jobs will fire, and why there.

Both ask the scheduler (REST, like the other `jobs` commands), so they show the jobs and
calendars in force and which jobs are paused; `jobs validate FILE --next N` previews files
offline with the same code (scheduler.preview).
"""

from __future__ import annotations

from typing import Any

import click

from scheduler.cli.client import Client, CliError, client_options, quote
from scheduler.cli.output import json_option, print_json, print_table
from scheduler.cli.runs import TimeParam


def _local(fire: dict[str, Any]) -> str:
    local = str(fire.get("local", ""))
    return f"{local[:10]} {local[11:16]} {fire.get('zone') or ''}".strip()


def _notes(fire: dict[str, Any]) -> str:
    return "; ".join(fire.get("notes") or [])


def print_fires(view: dict[str, Any]) -> None:
    """One job's preview (a `next` answer) as a header line and a table."""
    paused = " [paused: will not fire until resumed]" if view.get("paused") else ""
    click.echo(f"{view.get('job')}: {view.get('trigger')}{paused}")
    if view.get("warning"):
        click.echo(f"warning: {view['warning']}")
    print_table(view.get("fires", []), [
        (f"LOCAL ({view.get('timezone')})", _local),
        ("UTC", lambda f: f.get("utc")),
        ("NOTE", _notes),
    ], empty="no fires")


@click.command("next")
@click.argument("name")
@click.option("--count", type=click.IntRange(1, 1000), default=10, show_default=True,
              help="How many fires to show.")
@click.option("--from", "start", type=TimeParam(), default=None,
              help="Start after this time (ISO-8601; UTC unless it has an offset); default now.")
@client_options
@json_option
def next_fires(client: Client, name: str, count: int, start: str | None, as_json: bool) -> None:
    """Show a job's next fire times, in its time zone and in UTC, with why each is there.

    A fire is marked when DST moved it ("02:30 does not exist on 2027-03-28 -> runs 03:00") or
    dropped a wall time, when its calendar excluded dates, and with its business day.

    Example: hasched jobs next nightly-backup --count 5 --from 2027-03-26
    """
    answer = client.get_json(f"/v1/jobs/{quote(name)}/next", {"count": count, "from": start})
    if as_json:
        print_json(answer)
    else:
        print_fires(answer)


@click.command("forecast")
@click.option("--from", "start", type=TimeParam(), default=None,
              help="Window start (ISO-8601; UTC unless it has an offset); default now.")
@click.option("--to", "end", type=TimeParam(), required=True, help="Window end (ISO-8601).")
@click.option("--limit", type=click.IntRange(1, 10_000), default=10_000, show_default=True,
              help="At most this many fires.")
@client_options
@json_option
def forecast(client: Client, start: str | None, end: str, limit: int, as_json: bool) -> None:
    """Every fire of every job in a window, in time order: check it before maintenance.

    Example: hasched jobs forecast --from 2026-12-24T18:00Z --to 2026-12-27T06:00Z
    """
    if start is not None and end <= start:
        raise CliError(f"--to {end} is not after --from {start}")
    answer = client.get_json("/v1/forecast", {"from": start, "to": end, "limit": limit})
    if as_json:
        print_json(answer)
        return
    print_table(answer.get("fires", []), [
        ("UTC", lambda f: f.get("utc")),
        ("JOB", lambda f: f.get("job") + (" (paused)" if f.get("paused") else "")),
        ("LOCAL", _local),
        ("ZONE", lambda f: f.get("timezone")),
        ("NOTE", _notes),
    ], empty=f"no fires between {answer.get('from')} and {answer.get('to')}")
    if answer.get("truncated"):
        click.echo(f"(only the first {len(answer.get('fires', []))} fires; use --limit or a "
                   "shorter window)")
