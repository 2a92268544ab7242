"""A free TCP port for a daemon a test or a benchmark starts (integration, OCF, bench)."""

from __future__ import annotations

import socket


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on now. The kernel may hand it out again before the daemon binds
    it; tests start their daemons one by one, so that race stays theoretical."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]
