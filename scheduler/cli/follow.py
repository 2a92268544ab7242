"""Watching a run from the CLI: waiting for its end with its progress shown (`jobs run --wait`,
`runs cancel --wait`) and following its output as it comes (`runs logs --follow`).

Both poll the REST API (a run's view and its output are plain GETs), every POLL seconds.
"""

from __future__ import annotations

import codecs
import time
from collections.abc import Callable
from typing import Any

import click

from scheduler.cli.client import Client, CliError, quote
from scheduler.protocol import OPEN_STATES
from scheduler.units import format_duration, parse_duration

POLL = 0.5
TIMED_OUT_EXIT = 124  # as timeout(1): the wait ended, the run goes on


class DurationParam(click.ParamType):
    """A duration as the job files write them: 30s, 5m, 1h30m, or seconds."""

    name = "DURATION"

    def convert(self, value: Any, param: Any, ctx: Any) -> float:
        if isinstance(value, float):
            return value
        try:
            seconds = parse_duration(str(value))
        except ValueError as exc:
            self.fail(str(exc), param, ctx)
        if seconds <= 0:
            self.fail(f"{value!r}: must be more than 0s", param, ctx)
        return seconds


def timeout_option(func: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--timeout", type=DurationParam(), default=None,
                        help="With --wait: stop waiting after this long (30s, 5m, 1h), exit "
                             f"{TIMED_OUT_EXIT}; the run goes on.")(func)


def progress_line(run: dict[str, Any], elapsed: float) -> str:
    """One line per change of a run's attempt or state while waiting."""
    where = f" on {run['agent']}" if run.get("agent") and run.get("state") != "scheduled" else ""
    reason = f": {run['reason']}" if run.get("reason") else ""
    return (f"[{format_duration(round(elapsed))}] {run.get('run_id')} attempt "
            f"{run.get('attempt', 1)}: {run.get('state')}{where}{reason}")


def wait_for_end(client: Client, run_id: str, timeout: float | None,
                 clock: Callable[[], float] = time.monotonic) -> dict[str, Any]:
    """The run once its latest attempt has ended; each change of attempt or state on stderr
    meanwhile. Past `timeout` seconds: one line and exit TIMED_OUT_EXIT."""
    start, seen = clock(), None
    while True:
        run = client.get_json(f"/v1/runs/{quote(run_id)}")
        now = (run.get("attempt"), run.get("state"), run.get("reason"))
        if now != seen:
            click.echo(progress_line(run, clock() - start), err=True)
            seen = now
        if run.get("state") not in OPEN_STATES:
            return run
        if timeout is not None and clock() - start >= timeout:
            click.echo(f"hasched: {run_id} still {run.get('state')} after "
                       f"{format_duration(timeout)}; no longer waiting (the run goes on)",
                       err=True)
            raise SystemExit(TIMED_OUT_EXIT)
        time.sleep(POLL)


def follow_output(client: Client, run_id: str, stream: str) -> dict[str, Any]:
    """Print a run's `stream` as it grows, until its latest attempt has ended and all its
    output is out; the run as it ended. A retry's output follows a line saying so."""
    attempt, printed = None, 0
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    while True:
        run = client.get_json(f"/v1/runs/{quote(run_id)}")
        ended = run.get("state") not in OPEN_STATES
        if run.get("attempt") != attempt:
            if attempt is not None:
                click.echo(f"[hasched: attempt {run.get('attempt')}]", err=True)
            attempt, printed = run.get("attempt"), 0
            decoder.reset()
        data = _output(client, run_id, stream, run)
        if len(data) > printed:  # output only grows within an attempt
            click.echo(decoder.decode(data[printed:]), nl=False)
            printed = len(data)
        if ended:
            click.echo(decoder.decode(b"", final=True), nl=False)
            return run
        time.sleep(POLL)


def _output(client: Client, run_id: str, stream: str, run: dict[str, Any]) -> bytes:
    """The output so far; nothing yet while the run waits for its agent."""
    try:
        return client.get_bytes(f"/v1/runs/{quote(run_id)}/output", {"stream": stream})
    except CliError:
        if run.get("state") in ("scheduled", "dispatched"):
            return b""  # not started: no output anywhere yet
        raise
