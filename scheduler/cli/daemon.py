"""`hasched scheduler run`: the scheduler daemon in the foreground."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from pathlib import Path
from typing import Any

import click

log = logging.getLogger("hasched.scheduler")

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
    sys.exit(run(config, role, pidfile, log_level))


def _write_pidfile(path: str) -> None:
    tmp = Path(f"{path}.tmp")
    tmp.write_text(f"{os.getpid()}\n")
    tmp.replace(path)


async def _serve(sched: Any, pidfile: str | None) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGHUP, lambda: loop.create_task(sched.reload()))
    try:
        await sched.start()
        if pidfile:
            _write_pidfile(pidfile)
        st = sched.status()
        log.info("scheduler running (pid %d, role %s, epoch %d)", st["pid"], st["role"],
                 st["epoch"])
        await stop.wait()
        log.info("stopping")
    finally:
        await sched.stop()
        if pidfile:
            Path(pidfile).unlink(missing_ok=True)


def run(config_path: str, role: str = "active", pidfile: str | None = None,
        log_level: str | None = None) -> int:
    """The `hasched scheduler run` command; returns the exit status."""
    # Imported here so that `hasched --help` and the other commands do not load aiohttp.
    from scheduler.config import ConfigError, load_scheduler_config
    from scheduler.daemon import Scheduler
    from scheduler.ledger import LedgerError
    from scheduler.logs import setup_logging
    from scheduler.statedir import StateDirBusy, StateDirError, lock_state_dir

    os.umask(0o077)  # this daemon runs no jobs: whatever it creates is its own business
    try:
        config = load_scheduler_config(config_path)
        jobs_dir = Path(config.jobs_dir)
        if not jobs_dir.is_dir():
            raise ConfigError(config.path, None, "jobs_dir", f"{jobs_dir}: not a directory")
        setup_logging(log_level or config.log_level)
        # First of all: a second instance must refuse before it touches the state, the ledger
        # or the control socket of the one running.
        lock = lock_state_dir(config.state_dir, "scheduler")
    except (ConfigError, StateDirError) as e:
        print(" ".join(str(e).split()), file=sys.stderr)
        return 1 if isinstance(e, StateDirBusy) else 2
    try:
        try:
            sched = Scheduler(config, role, _metrics())
        except (ConfigError, LedgerError, StateDirError) as e:
            print(" ".join(str(e).split()), file=sys.stderr)
            return 2
        try:
            asyncio.run(_serve(sched, pidfile))
        except (ConfigError, LedgerError, StateDirError, OSError) as e:
            log.error("%s", " ".join(str(e).split()))
            return 1
        return 0
    finally:
        lock.release()


def _metrics() -> Any:
    from scheduler.metrics import Metrics

    return Metrics()


def main() -> None:
    scheduler(prog_name="hasched scheduler")


if __name__ == "__main__":
    main()
