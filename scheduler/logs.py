"""Daemon logging: one line per event on stderr, which systemd and Pacemaker's agent capture."""

from __future__ import annotations

import logging
import sys

from scheduler.times import log_stamp

# The levels a daemon accepts (configuration, command line, `hasched ctl log-level`).
LOG_LEVELS = ("debug", "info", "warning", "error")


class _IsoFormatter(logging.Formatter):
    """Lines start with an ISO 8601 UTC time to the millisecond, so that a scheduler.log can
    be lined up with Pacemaker's log (and the other node's) after a failover."""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802
        return log_stamp(record.created)

    def format(self, record: logging.LogRecord) -> str:
        return super().format(record).rstrip()  # a warning's text ends in a newline of its own


def _warning_line(record: logging.LogRecord) -> bool:
    """A Python warning in one line: "FILE:LINE: Category: text", not the source line after."""
    record.msg, record.args = record.getMessage().strip().splitlines()[0], ()
    return True


class _DaemonHandler(logging.StreamHandler):  # type: ignore[type-arg] - generic in typeshed only
    """Ours (so that a second setup replaces it and leaves other handlers alone)."""


def setup_logging(level: str) -> None:
    """Send the `hasched` loggers to stderr as `TIME LEVEL name: message`; the libraries'
    warnings and errors (asyncio, aiohttp, Python's warnings) too, in the same format: without
    it they went out through logging's last resort, a bare message with no time."""
    handler = _DaemonHandler(sys.stderr)
    handler.setFormatter(_IsoFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger("hasched")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # Our own handler only: a library's basicConfig must not print each line twice.
    root.propagate = False
    top = logging.getLogger()
    top.handlers[:] = [h for h in top.handlers if not isinstance(h, _DaemonHandler)]
    top.addHandler(handler)  # at the root's level: WARNING unless someone chose otherwise
    logging.captureWarnings(True)
    warned = logging.getLogger("py.warnings")
    if _warning_line not in warned.filters:
        warned.addFilter(_warning_line)
