"""scheduler.log: ISO timestamps on every line; `ctl log-level debug` gives debug lines."""

from __future__ import annotations

import re
import urllib.request

import pytest
from conftest import Lab, Scheduler, wait_for

pytestmark = pytest.mark.integration

LINE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z (DEBUG|INFO|WARNING|ERROR) hasched")


def test_log_lines_are_timestamped_and_log_level_debug_works(lab: Lab) -> None:
    s = Scheduler(lab.root, "a", lab.agents, lab.jobs_dir)
    s.config.write_text(s.config.read_text().replace('log_level = "debug"', 'log_level = "info"'))
    lab.schedulers.append(s)
    s.start("standby")
    assert s.proc is not None

    def health() -> None:
        urllib.request.urlopen(f"http://127.0.0.1:{s.port}/health", timeout=30).read()

    health()
    assert " DEBUG " not in s.proc.logtext()
    assert s.ctl({"op": "log-level", "level": "debug"})["ok"]
    health()
    wait_for("a debug line for the request", lambda: "DEBUG hasched.api: GET /health from"
             in s.proc.logtext())
    lines = s.proc.logtext().splitlines()
    assert lines and all(LINE.match(line) for line in lines), lines
