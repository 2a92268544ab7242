"""Daemon logging: one line per event on stderr, which systemd and Pacemaker's agent capture."""

from __future__ import annotations

import logging
import sys
import time


class _IsoFormatter(logging.Formatter):
    """Lines start with an ISO 8601 UTC time to the millisecond, so that a scheduler.log can
    be lined up with Pacemaker's log (and the other node's) after a failover."""

    converter = time.gmtime

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", self.converter(record.created))
        return f"{stamp}.{int(record.msecs):03d}Z"


def setup_logging(level: str) -> None:
    """Send the `hasched` loggers to stderr as `TIME LEVEL name: message`."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_IsoFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger("hasched")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # Our own handler only: a library's basicConfig must not print each line twice.
    root.propagate = False
