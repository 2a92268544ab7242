"""The `hasched` command: one root group whose sub-commands are imported only when used.

Lazy loading keeps `hasched ctl` (run by the OCF agent on promote/demote) from importing the
REST client or aiohttp, and lets the CLI work while a part is not installed.
"""

from __future__ import annotations

import importlib
from typing import Any

import click

from scheduler import __version__

# command name -> (module, attribute, one-line help shown without importing the module)
COMMANDS: dict[str, tuple[str, str, str]] = {
    "jobs": ("scheduler.cli.jobs", "jobs",
             "Jobs: list, show, run now, pause, resume, next, forecast, validate."),
    "runs": ("scheduler.cli.runs", "runs", "Runs: list, show, print or follow output, cancel."),
    "audit": ("scheduler.cli.audit", "audit", "Who did what to which job or run, when."),
    "status": ("scheduler.cli.status", "status", "The scheduler's role, epoch and counts."),
    "scheduler": ("scheduler.cli.daemon", "scheduler", "Run the scheduler daemon."),
    "agent": ("scheduler.cli.agent", "agent", "Run the agent daemon."),
    "ctl": ("scheduler.cli.ctl", "ctl", "Talk to the local scheduler's control socket."),
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(COMMANDS) | set(self.commands))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self.commands or cmd_name not in COMMANDS:
            return self.commands.get(cmd_name)
        module_name, attr, _ = COMMANDS[cmd_name]
        try:
            command = getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError) as exc:
            return _unavailable(cmd_name, exc)
        self.commands[cmd_name] = command
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        # Short help from COMMANDS so `hasched --help` imports nothing.
        rows = [(name, COMMANDS[name][2]) for name in sorted(COMMANDS)]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


def _unavailable(name: str, exc: Exception) -> click.Command:
    reason = " ".join(str(exc).split())

    def fail(**_: Any) -> None:
        raise click.ClickException(f"command {name!r} is not available here: {reason}")

    return click.Command(name, callback=fail, help=f"(unavailable: {reason})",
                         context_settings={"ignore_unknown_options": True},
                         params=[click.Argument(["args"], nargs=-1, required=False)])


@click.group("hasched", cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="hasched")
# Global options, before the sub-command; the same options after it win (scheduler.cli.client).
@click.option("--url", metavar="URL", default=None,
              help="Scheduler REST API (env HASCHED_URL; default http://127.0.0.1:8480).")
@click.option("--token-file", metavar="FILE", default=None,
              help="File holding the API token (env HASCHED_TOKEN_FILE).")
@click.option("--ca", metavar="FILE", default=None,
              help="CA certificate to verify an https scheduler (env HASCHED_CA).")
@click.option("--json", "as_json", is_flag=True, help="JSON answers, for programs.")
def cli(**_: object) -> None:
    """hasched: a job scheduler that a Pacemaker/Corosync cluster keeps running.

    \b
    Examples:
      hasched jobs list
      hasched --url https://vip:8480 --ca /etc/hasched/ca.pem jobs run nightly-backup --wait
      hasched runs logs --follow nightly-backup
      hasched runs cancel 'nightly-backup@2026-12-01T01:30:00Z'
      hasched audit --job nightly-backup --since 1d
    """


def main() -> None:
    cli(prog_name="hasched")


if __name__ == "__main__":
    main()
