"""`hasched scheduler run`: the scheduler daemon in the foreground."""

from __future__ import annotations

import sys

import click

LOG_LEVELS = ("debug", "info", "warning", "error")


@click.group("scheduler")
def scheduler() -> None:
    """The scheduler daemon (active or standby).

    \b
    Example:
      hasched scheduler run --config /etc/hasched/scheduler.toml --role standby \\
          --pidfile /run/hasched/scheduler.pid
    """


@scheduler.command("run")
@click.option("--config", "config", required=True, type=click.Path(dir_okay=False),
              help="scheduler.toml")
@click.option("--role", type=click.Choice(("active", "standby")), default="active",
              show_default=True, help="Role at start; Pacemaker starts it standby and promotes.")
@click.option("--pidfile", type=click.Path(dir_okay=False),
              help="Written once the control socket listens.")
@click.option("--log-level", type=click.Choice(LOG_LEVELS), default=None,
              help="Overrides log_level from the config.")
def run_cmd(config: str, role: str, pidfile: str | None, log_level: str | None) -> None:
    """Run the scheduler until SIGTERM/SIGINT (exit 0); SIGHUP re-reads the job files.

    \b
    Example:
      hasched scheduler run --config /etc/hasched/scheduler.toml
    """
    # Imported here so that `hasched --help` and the other commands do not load aiohttp.
    from scheduler.daemon import run

    sys.exit(run(config, role, pidfile, log_level))


def main() -> None:
    scheduler(prog_name="hasched scheduler")


if __name__ == "__main__":
    main()
