"""`hasched runs`: list runs, show one, print or follow its output, cancel one."""

from __future__ import annotations

import re
import shlex
from datetime import datetime, timedelta
from typing import Any

import click

from scheduler.cli.client import Client, CliError, client_options, quote
from scheduler.cli.follow import follow_output, timeout_option, wait_for_end
from scheduler.cli.output import (
    json_option,
    print_json,
    print_table,
    short_time,
    show_record,
)
from scheduler.protocol import OPEN_STATES
from scheduler.times import nominal_iso, parse_time, utc_now

RUN_ORDER = ("run_id", "attempt", "job", "state", "reason", "exit_code", "agent", "epoch",
             "nominal", "started_at", "finished_at", "truncated")
_AGO = re.compile(r"(\d+)([smhd])")
_SPAN = re.compile(r"(\d+[smhd])+")
_UNIT = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


class TimeParam(click.ParamType):
    """An ISO-8601 time, or a span back from now such as 30m, 2h, 1d, 1h30m."""

    name = "TIME"

    def convert(self, value: Any, param: Any, ctx: Any) -> str:
        text = str(value).strip()
        if _SPAN.fullmatch(text):
            ago = sum((timedelta(**{_UNIT[u]: int(n)}) for n, u in _AGO.findall(text)),
                      timedelta())
            return nominal_iso(utc_now() - ago)
        try:
            return nominal_iso(parse_time(text))
        except ValueError:
            self.fail(f"{text!r} is neither an ISO-8601 time nor a span like 30m, 2h, 1d", param,
                      ctx)


def _duration(run: dict[str, Any]) -> str | None:
    try:
        start = datetime.fromisoformat(run["started_at"])
        end = datetime.fromisoformat(run["finished_at"])
    except (KeyError, TypeError, ValueError):
        return None
    seconds = int((end - start).total_seconds())
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


@click.group("runs")
def runs() -> None:
    """Runs of jobs, newest first: list, inspect, read or follow their output, cancel."""


@runs.command("list")
@click.option("--job", default=None, help="Only runs of this job.")
@click.option("--state", default=None,
              help="Only runs in this state (scheduled, dispatched, running, succeeded, "
                   "failed, timed-out, cancelled, lost).")
@click.option("--since", type=TimeParam(), default=None,
              help="Only runs since this time: ISO-8601, or a span back from now (2h, 1d).")
@click.option("--until", type=TimeParam(), default=None, help="Only runs before this time.")
@click.option("--limit", type=click.IntRange(1, 10_000), default=50, show_default=True,
              help="At most this many runs.")
@client_options
@json_option
def list_runs(client: Client, job: str | None, state: str | None, since: str | None,  # noqa: PLR0913 - click passes one argument per option
              until: str | None, limit: int, as_json: bool) -> None:
    """List runs, newest first, optionally filtered.

    Example: hasched runs list --job nightly-backup --state failed --since 1d
    """
    answer = client.get_json("/v1/runs", {"job": job, "state": state, "since": since,
                                          "until": until, "limit": limit})
    if as_json:
        print_json(answer)
        return
    print_table(answer.get("runs", []), [
        ("RUN ID", lambda r: r.get("run_id")),
        ("TRY", lambda r: r.get("attempt")),
        ("STATE", lambda r: r.get("state")),
        ("AGENT", lambda r: r.get("agent")),
        ("STARTED", lambda r: short_time(r.get("started_at"))),
        ("TOOK", _duration),
        ("EXIT", lambda r: r.get("exit_code")),
    ], empty="no runs")


def _resolve(client: Client, run_id: str) -> str:
    """A run id, or a job name (no '@' in it) standing for that job's newest run."""
    if "@" in run_id:
        return run_id
    rows = client.get_json("/v1/runs", {"job": run_id, "limit": 1}).get("runs", [])
    if not rows:
        raise CliError(f"no runs of job {run_id!r}")
    return rows[0]["run_id"]


@runs.command("show")
@click.argument("run_id")
@client_options
@json_option
def show_run(client: Client, run_id: str, as_json: bool) -> None:
    """Show one run (RUN_ID, or a job name for its newest run): state, reason, agent, times.

    Example: hasched runs show 'nightly-backup@2026-12-01T01:30:00Z'
    """
    run = client.get_json(f"/v1/runs/{quote(_resolve(client, run_id))}")
    if not as_json:
        dropped = {s: run.pop(f"{s}_dropped", None) or 0 for s in ("stdout", "stderr")}
        run["truncated"] = ", ".join(f"{s}: {n} bytes dropped" for s, n in dropped.items() if n
                                     ) or False
    show_record(run, RUN_ORDER, as_json)


def truncation_mark(stream: str, dropped: int) -> str:
    """The last line of `runs logs` for output cut at the agent's output_limit."""
    return (f"[hasched: {stream} truncated at the agent's output_limit: {dropped} more bytes "
            f"were dropped]")


@runs.command("logs")
@click.argument("run_id")
@click.option("--stderr", is_flag=True, help="Print the run's stderr instead of its stdout.")
@click.option("--follow", "-f", is_flag=True,
              help="Print the output as it comes, until the run ends (a retry's too).")
@client_options
@json_option
def run_logs(client: Client, run_id: str, stderr: bool, follow: bool, as_json: bool) -> None:
    """Print a run's stdout (or --stderr); RUN_ID, or a job name for its newest run.

    Example: hasched runs logs 'nightly-backup@2026-12-01T01:30:00Z' --stderr
    Example: hasched runs logs --follow nightly-backup
    """
    stream = "stderr" if stderr else "stdout"
    if follow and as_json:
        raise click.UsageError("--follow prints the output as it comes; it does not go with "
                               "--json")
    run_id = _resolve(client, run_id)
    if follow:
        run = follow_output(client, run_id, stream)
        if run.get(f"{stream}_dropped"):
            click.echo(truncation_mark(stream, run[f"{stream}_dropped"]))
        return
    text = client.get_text(f"/v1/runs/{quote(run_id)}/output", {"stream": stream})
    dropped = client.get_json(f"/v1/runs/{quote(run_id)}").get(f"{stream}_dropped") or 0
    if as_json:
        print_json({"run_id": run_id, "stream": stream, "output": text,
                    "truncated": bool(dropped), "dropped": dropped})
        return
    click.echo(text, nl=False)
    if dropped:  # said where the output stops, on a line of its own
        click.echo(("\n" if text and not text.endswith("\n") else "")
                   + truncation_mark(stream, dropped))


def _open_run_of(client: Client, job: str) -> str:
    """A job's one unfinished run (a job name given to `runs cancel`)."""
    rows = client.get_json("/v1/runs", {"job": job, "limit": 1000}).get("runs", [])
    open_ids = sorted({r["run_id"] for r in rows if r.get("state") in OPEN_STATES})
    if len(open_ids) != 1:
        which = f": {', '.join(open_ids[:5])}" if open_ids else ""
        raise CliError(f"job {job!r} has {len(open_ids)} unfinished runs{which}; give a run id")
    return open_ids[0]


@runs.command("cancel")
@click.argument("run_id")
@click.option("--wait", is_flag=True, help="Wait until the run has ended.")
@timeout_option
@client_options
@json_option
def cancel_run(client: Client, run_id: str, wait: bool, timeout: float | None,
               as_json: bool) -> None:
    """Cancel a run: one not sent yet ends at once; one at its agent is ended there (TERM,
    then KILL of all its processes after the agent's kill_grace). RUN_ID, or a job name with
    one unfinished run. Needs an operator's token.

    Example: hasched runs cancel 'nightly-backup@2026-12-01T01:30:00Z' --wait
    """
    if timeout is not None and not wait:
        raise click.UsageError("--timeout goes with --wait")
    if "@" not in run_id:
        run_id = _open_run_of(client, run_id)
    answer = client.post_json(f"/v1/runs/{quote(run_id)}/cancel")
    run = answer.get("run", {})
    if wait and answer.get("outcome") != "cancelled":
        run = wait_for_end(client, run_id, timeout)
        answer = {**answer, "run": run}
    if as_json:
        print_json(answer)
    elif answer.get("outcome") == "cancelled" or run.get("state") == "cancelled":
        click.echo(f"cancelled {run_id} attempt {run.get('attempt', 1)}")
    elif wait:
        click.echo(f"{run_id}: {run.get('state')} (it ended before the cancel reached it)")
    else:
        where = f" on {run['agent']}" if run.get("agent") else ""
        click.echo(f"cancel asked of {run_id} attempt {run.get('attempt', 1)}{where}; "
                   f"see: hasched runs show {shlex.quote(run_id)}")
