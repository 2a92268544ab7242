"""`hasched agent run --config FILE`: the agent daemon in the foreground."""

from __future__ import annotations

import sys

import click

from scheduler.logs import LOG_LEVELS


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


@agent.command("reset-epoch")
@click.option("--config", "config", required=True, type=click.Path(dir_okay=False),
              help="agent.toml")
@click.option("--epoch", type=click.IntRange(0, 2**53), default=0, show_default=True,
              help="The epoch the agent keeps from now on (the cluster's current one, say).")
def reset_epoch_cmd(config: str, epoch: int) -> None:
    """Set the agent's epoch, lower or not: the way back after it was raised too far.

    Run it on the agent's machine, as the agent's account (it writes the agent's state
    directory, which only that account can read), with the agent stopped.
    """
    from scheduler.agent.admin import reset_epoch

    sys.exit(reset_epoch(config, epoch))
