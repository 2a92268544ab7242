"""Every tier's common plugin: no tier passes by skipping, and each one reports what it ran.

Under `make test` (HASCHED_STRICT=1) a skipped test is reported as failed, with its reason (which
names the package to install). With HASCHED_TIER_REPORT=FILE and HASCHED_TIER=NAME, the session
appends one JSON line of counts to FILE; `python -m tests.tiers` prints and judges them.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

# `tests.deps`, `tests.lab` importable from every tier, wherever pytest was started.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

STRICT = os.environ.get("HASCHED_STRICT") == "1"
_outcomes: dict[str, str] = {}
_RANK = {"passed": 0, "skipped": 1, "failed": 2}


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    outcome = yield
    report = outcome.get_result()
    if STRICT and report.skipped and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = f"skipped under make test, which runs every test: {reason}"


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    # A test's outcome is the worst of its phases (setup, call, teardown).
    if _RANK[report.outcome] >= _RANK[_outcomes.get(report.nodeid, "passed")]:
        _outcomes[report.nodeid] = report.outcome


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    path, tier = os.environ.get("HASCHED_TIER_REPORT"), os.environ.get("HASCHED_TIER")
    if not (path and tier):
        return
    counts = {k: sum(1 for v in _outcomes.values() if v == k) for k in _RANK}
    line = {"tier": tier, "run": len(_outcomes), **counts, "exit": int(exitstatus)}
    with open(path, "a") as f:
        f.write(json.dumps(line) + "\n")


def pytest_collectreport(report: pytest.CollectReport) -> None:
    # A module that fails to import counts as a failed test, not as nothing to run.
    if report.failed:
        _outcomes[f"collect:{report.nodeid}"] = "failed"
