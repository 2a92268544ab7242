"""`hasched jobs`: list, show, run, pause, resume, next, forecast (REST) and validate (offline,
on files)."""

from __future__ import annotations

import shlex
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from scheduler.cli.client import Client, CliError, client_options, quote
from scheduler.cli.fires import forecast, next_fires, print_fires
from scheduler.cli.follow import timeout_option, wait_for_end
from scheduler.cli.output import (
    duration,
    json_option,
    print_json,
    print_table,
    short_time,
    show_record,
    stale_line,
)
from scheduler.cli.runs import TimeParam

JOB_ORDER = ("name", "paused", "next_fire", "schedule", "cron", "every", "at", "timezone",
             "agent", "pool", "command", "timeout", "retries")


def _schedule(job: dict[str, Any]) -> Any:
    for key in ("schedule", "cron", "every", "at"):
        if job.get(key):
            value = job[key]
            return value if key in ("schedule", "cron") else f"{key} {duration(value)}"
    return job.get("trigger")


def _target(job: dict[str, Any]) -> Any:
    if job.get("agent"):
        return job["agent"]
    if job.get("pool"):
        return f"pool:{job['pool']}"
    return None


@click.group("jobs")
def jobs() -> None:
    """Jobs the scheduler knows: list, inspect, run now, pause, resume, preview fire times
    (next, forecast), validate files."""


@jobs.command("list")
@client_options
@json_option
def list_jobs(client: Client, as_json: bool) -> None:
    """List every job with its schedule, target and next fire time.

    Example: hasched jobs list --json
    """
    answer = client.get_json("/v1/jobs")
    if as_json:
        print_json(answer)
        return
    stale = stale_line(answer.get("definitions"))
    if stale:
        click.echo(f"warning: {stale}", err=True)
    print_table(sorted(answer.get("jobs", []), key=lambda j: j.get("name", "")), [
        ("NAME", lambda j: j.get("name")),
        ("SCHEDULE", _schedule),
        ("TARGET", _target),
        ("NEXT FIRE", lambda j: "paused" if j.get("paused") else short_time(j.get("next_fire"))),
    ], empty="no jobs")


def human_job(job: dict[str, Any]) -> dict[str, Any]:
    """A job's view for a person: durations as job files write them, the command as a shell
    line, retries, misfire and DST policies in words."""
    shown = dict(job)
    for key in ("every", "timeout"):
        if isinstance(job.get(key), int | float):
            shown[key] = duration(job[key])
    if job.get("timeout") is None and "timeout" in job:
        shown["timeout"] = "none"
    if isinstance(job.get("command"), list):
        shown["command"] = shlex.join(str(a) for a in job["command"])
    retries = job.get("retries")
    if isinstance(retries, dict):
        count = retries.get("count") or 0
        shown["retries"] = (f"{count}, {duration(retries.get('delay'))} apart" if count
                            else "none")
    misfire = job.get("misfire")
    if isinstance(misfire, dict):
        shown["misfire"] = f"{misfire.get('policy')} within {duration(misfire.get('grace'))}"
    if isinstance(job.get("dst"), dict):
        shown["dst"] = ", ".join(f"{k} {v}" for k, v in sorted(job["dst"].items()))
    if isinstance(job.get("env"), dict):
        shown["env"] = " ".join(f"{k}={shlex.quote(str(v))}" for k, v in job["env"].items())
    if isinstance(job.get("secret_env"), dict):  # the API shows each value as <secret>
        shown["secret_env"] = " ".join(f"{k}={v}" for k, v in job["secret_env"].items())
    return shown


@jobs.command("show")
@click.argument("name")
@client_options
@json_option
def show_job(client: Client, name: str, as_json: bool) -> None:
    """Show one job's definition, next fire time and whether it is paused.

    Example: hasched jobs show nightly-backup
    """
    job = client.get_json(f"/v1/jobs/{quote(name)}")
    show_record(job if as_json else human_job(job), JOB_ORDER, as_json)


@jobs.command("run")
@click.argument("name")
@click.option("--wait", is_flag=True,
              help="Wait until the run ends, showing its progress on stderr; exit 0 only if "
                   "it succeeded.")
@timeout_option
@client_options
@json_option
def run_job(client: Client, name: str, wait: bool, timeout: float | None, as_json: bool) -> None:
    """Start a run of a job now, outside its schedule; prints the new run id.

    Example: hasched jobs run nightly-backup --wait --timeout 10m
    """
    if timeout is not None and not wait:
        raise click.UsageError("--timeout goes with --wait")
    answer = client.post_json(f"/v1/jobs/{quote(name)}/run")
    run = answer.get("run", {})
    if not as_json:
        click.echo(f"started {run.get('run_id', '?')}")
    if wait:
        run = wait_for_end(client, run["run_id"], timeout)
        answer = {"run": run}
    if as_json:
        print_json(answer)
    elif wait:
        reason = f" ({run['reason']})" if run.get("reason") else ""
        click.echo(f"{run['run_id']}: {run.get('state')}{reason}")
    if wait and run.get("state") != "succeeded":
        raise SystemExit(1)


@jobs.command("pause")
@click.argument("name")
@client_options
def pause_job(client: Client, name: str) -> None:
    """Stop a job from firing on its schedule until resumed (manual runs still work).

    Example: hasched jobs pause nightly-backup
    """
    client.post_json(f"/v1/jobs/{quote(name)}/pause")
    click.echo(f"paused {name}")


@jobs.command("resume")
@click.argument("name")
@client_options
def resume_job(client: Client, name: str) -> None:
    """Let a paused job fire on its schedule again; prints its next fire time.

    Example: hasched jobs resume nightly-backup
    """
    job = client.post_json(f"/v1/jobs/{quote(name)}/resume")
    click.echo(f"resumed {name}; next fire {job.get('next_fire') or '-'}")


jobs.add_command(next_fires)
jobs.add_command(forecast)


@jobs.command("validate")
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--config", "config_file", type=click.Path(path_type=Path), default=None,
              help="Scheduler config: also check agent, pool and calendar names against it.")
@click.option("--next", "count", type=click.IntRange(1, 1000), default=None,
              help="Also show each job's next N fire times (as `hasched jobs next`).")
@click.option("--from", "start", type=TimeParam(), default=None,
              help="With --next: start after this time (ISO-8601, UTC unless it has an "
                   "offset); default now.")
@json_option
def validate_jobs(path: Path, config_file: Path | None, count: int | None, start: str | None,
                  as_json: bool) -> None:
    """Check job files OFFLINE (a file or a directory of *.toml); nothing is changed.

    Prints each error as `file:line: field: message` and exits 1 if there is any,
    else prints "N jobs OK". Warns (exit 0) about a schedule that never fires and an `at` in
    the past.

    Example: hasched jobs validate /etc/hasched/jobs --config /etc/hasched/scheduler.toml
    """
    from scheduler import preview
    from scheduler.jobfiles import load_job_file, load_jobs_dir

    if not path.exists():
        raise CliError(f"{path}: no such file or directory")
    names = _config_names(config_file) if config_file else {}
    if path.is_dir():
        found, errors = load_jobs_dir(path, **names)
        loaded = list(found.values())  # in file order, as the job files list them
    else:
        loaded, errors = load_job_file(path, **names)
        errors = sorted(errors, key=lambda e: e.line or 0)
    now = datetime.now(UTC)
    begin = datetime.fromisoformat(start) if start else now
    warnings = [f"{job.source}: job.{job.name}: warning: {text}" for job in loaded
                if (text := preview.never_fires(job.trigger, now))]
    views = [preview.next_view(job, begin, count) for job in loaded] if count else []
    if as_json:
        print_json({"ok": not errors, "jobs": len(loaded), "errors": [str(e) for e in errors],
                    "warnings": warnings, "next": views})
    else:
        for line in [str(e) for e in errors] + warnings:
            click.echo(line)
        if not errors:
            click.echo(f"{len(loaded)} job{'' if len(loaded) == 1 else 's'} OK")
        for view in views:
            click.echo("")
            print_fires(view)
    if errors:
        raise SystemExit(1)


def _config_names(config_file: Path) -> dict[str, Any]:
    """Agent, pool and calendar names a job may refer to, from the scheduler configuration."""
    from scheduler.config import ConfigError, load_scheduler_config

    try:
        config = load_scheduler_config(config_file)
    except ConfigError as exc:
        raise CliError(str(exc)) from None
    agents = config.agents
    pools = {label for agent in agents.values() for label in agent.labels}
    calendars = None
    if config.calendars_file:
        from scheduler.calendars import load_calendars

        try:
            calendars = load_calendars(config.calendars_file)
        except ConfigError as exc:
            raise CliError(str(exc)) from None
    return {"agents": set(agents), "pools": pools, "calendars": calendars}
