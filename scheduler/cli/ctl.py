"""`hasched ctl`: the local scheduler's control socket (what Pacemaker's resource agent uses).

Exit status: 0 when the daemon answered ok, 1 when it answered an error, 7 when nothing listens
(OCF_NOT_RUNNING), 2 for a usage or configuration mistake.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from scheduler.logs import LOG_LEVELS

EXIT_ERROR = 1
EXIT_NOT_RUNNING = 7


def _socket_path(ctx: click.Context) -> Path:
    obj = ctx.obj or {}
    if obj.get("socket"):
        return Path(obj["socket"])
    from scheduler.config import ConfigError, load_scheduler_config

    try:
        cfg = load_scheduler_config(obj.get("config") or "/etc/hasched/scheduler.toml")
    except ConfigError as e:
        click.echo(" ".join(str(e).split()), err=True)
        sys.exit(2)
    return Path(cfg.run_dir) / "control.sock"


def _ask(ctx: click.Context, req: dict[str, Any]) -> None:
    from scheduler.control import request

    path = _socket_path(ctx)
    try:
        answer = request(path, req)
    except (FileNotFoundError, ConnectionRefusedError) as e:
        click.echo(f"{path}: nothing listening ({e.strerror})", err=True)
        sys.exit(EXIT_NOT_RUNNING)
    except OSError as e:
        click.echo(f"{path}: {e.strerror or e}", err=True)
        sys.exit(EXIT_ERROR)
    except ValueError:
        click.echo(f"{path}: garbled answer", err=True)
        sys.exit(EXIT_ERROR)
    click.echo(json.dumps(answer, sort_keys=True))
    sys.exit(0 if answer.get("ok") else EXIT_ERROR)


@click.group("ctl")
@click.option("--socket", "socket_path", type=click.Path(), default=None,
              help="Control socket path (default: <run_dir>/control.sock of --config).")
@click.option("--config", "config", type=click.Path(dir_okay=False), default=None,
              help="scheduler.toml [default: /etc/hasched/scheduler.toml]")
@click.pass_context
def ctl(ctx: click.Context, socket_path: str | None, config: str | None) -> None:
    """Talk to the local scheduler daemon's control socket; prints the JSON answer.

    Exit 0 when the answer is ok, 1 when it is an error, 7 when nothing listens.

    \b
    Example:
      hasched ctl --config /etc/hasched/scheduler.toml promote --epoch 4
    """
    ctx.obj = {"socket": socket_path, "config": config}


# The operations that take no argument: name and help.
_PLAIN_OPS = {
    "status": "Role, epoch, pid, jobs, agents reachable.",
    "check": "Deep self-check: the ledger is readable, job files parse.",
    "demote": "Become standby: stop planning and dispatching (running jobs go on).",
    "reload": "Re-read the job files (same as SIGHUP).",
}


def _plain_op(op: str, text: str) -> None:
    @ctl.command(op, help=text)
    @click.pass_context
    def command(ctx: click.Context) -> None:
        _ask(ctx, {"op": op})


for _op, _text in _PLAIN_OPS.items():
    _plain_op(_op, _text)


@ctl.command("promote")
@click.option("--epoch", type=click.IntRange(min=0), required=True,
              help="The cluster's epoch for this term; the daemon never goes below its own.")
@click.pass_context
def promote(ctx: click.Context, epoch: int) -> None:
    """Become active under EPOCH: adopt the agents' runs, catch up missed fires, plan."""
    _ask(ctx, {"op": "promote", "epoch": epoch})


@ctl.command("log-level")
@click.argument("level", type=click.Choice(LOG_LEVELS))
@click.pass_context
def log_level(ctx: click.Context, level: str) -> None:
    """Change the daemon's log level without a restart."""
    _ask(ctx, {"op": "log-level", "level": level})
