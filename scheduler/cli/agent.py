"""`hasched agent run --config FILE`: the agent daemon in the foreground."""

from __future__ import annotations

import sys

import click

LOG_LEVELS = ("debug", "info", "warning", "error")


@click.group("agent")
def agent() -> None:
    """The agent daemon that runs jobs on this machine."""


@agent.command("run")
@click.option("--config", "config", required=True, type=click.Path(dir_okay=False),
              help="agent.toml")
@click.option("--log-level", type=click.Choice(LOG_LEVELS), default="info", show_default=True)
def run_cmd(config: str, log_level: str) -> None:
    """Run the agent in the foreground until SIGTERM; running jobs are left running."""
    # Imported here so that `hasched --help` and the other commands do not load aiohttp.
    from scheduler.agent.daemon import run

    sys.exit(run(config, log_level))
