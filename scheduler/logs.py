"""Daemon logging: one line per event on stderr, which systemd and Pacemaker's agent capture."""

from __future__ import annotations

import logging
import sys


def setup_logging(level: str) -> None:
    """Send the `hasched` loggers to stderr as `LEVEL name: message`."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger("hasched")
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # Our own handler only: a library's basicConfig must not print each line twice.
    root.propagate = False
