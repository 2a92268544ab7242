"""`hasched audit`: who (a token's name) did what to which job or run, when and from where."""

from __future__ import annotations

import click

from scheduler.cli.client import Client, client_options
from scheduler.cli.output import json_option, print_json, print_table, short_time
from scheduler.cli.runs import TimeParam


@click.command("audit")
@click.option("--job", default=None, help="Only what was done to this job and its runs.")
@click.option("--since", type=TimeParam(), default=None,
              help="Only since this time: ISO-8601, or a span back from now (2h, 1d).")
@click.option("--limit", type=click.IntRange(1, 10_000), default=50, show_default=True,
              help="At most this many entries.")
@client_options
@json_option
def audit(client: Client, job: str | None, since: str | None, limit: int,
          as_json: bool) -> None:
    """The audit trail, newest first: every run now, pause, resume and cancel, with the name
    of the token that asked (never the token), its role and the client's address.

    Example: hasched audit --job nightly-backup --since 1d
    """
    answer = client.get_json("/v1/audit", {"job": job, "since": since, "limit": limit})
    if as_json:
        print_json(answer)
        return
    print_table(answer.get("entries", []), [
        ("AT", lambda e: short_time(e.get("at"))),
        ("WHO", lambda e: e.get("actor")),
        ("ROLE", lambda e: e.get("role")),
        ("FROM", lambda e: e.get("source")),
        ("ACTION", lambda e: e.get("action")),
        ("JOB", lambda e: e.get("job")),
        ("RUN", lambda e: e.get("run_id")),
        ("DETAIL", lambda e: e.get("detail")),
    ], empty="no audit entries")
