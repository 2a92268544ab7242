"""Past capacity: fires that cannot start on time wait and start late, every one, in nominal
order; meanwhile the scheduler says how far behind it is (/health, /metrics) and that it is
overloaded. The agent's launcher is stopped to hold every start back (the machine's capacity
exceeded, made certain)."""

from __future__ import annotations

import json
import time
import urllib.request
from datetime import datetime

import psutil
import pytest
from harness import Lab, Scheduler, dump, duplicates, job_toml, nominal_gaps, wait_for

pytestmark = pytest.mark.integration


def at(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def get(s: Scheduler, path: str) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{s.port}{path}", timeout=10) as answer:
        return answer.read().decode()


def health(s: Scheduler) -> dict:
    return json.loads(get(s, "/health"))


def behind_metric(s: Scheduler) -> float:
    line = next(x for x in get(s, "/metrics").splitlines()
                if x.startswith("hasched_behind_seconds "))
    return float(line.split()[1])


def launcher_of(pid: int) -> psutil.Process:
    def find() -> psutil.Process | None:
        return next((p for p in psutil.Process(pid).children()
                     if "--launcher" in (cmd := " ".join(p.cmdline()))
                     or cmd.startswith("hasched launcher")), None)
    return wait_for("the agent's launcher", find)


def test_fires_past_capacity_start_late_in_order_and_the_scheduler_says_it_is_behind(
        lab: Lab) -> None:
    marks = lab.root / "marks"
    marks.touch()
    a1 = lab.agent("a1")
    lab.job("tick", job_toml("tick", every="1s", agent="a1", concurrency="allow",
                             command=f'echo "$HASCHED_RUN_ID $PPID" >> "{marks}"'))
    s = Scheduler(lab.root, "a", lab.agents, lab.jobs_dir)
    s.config.write_text(s.config.read_text().replace(
        'log_level = "debug"', 'log_level = "debug"\noverload_after = "2s"'))
    lab.schedulers.append(s)
    s.start()
    wait_for("a first run of 'tick'", lambda: [r for r in s.ledger_rows("tick")
                                               if r["state"] == "succeeded"])
    first = health(s)
    assert first["overloaded"] is False and first["role"] == "active", first
    assert {"epoch", "version", "state_store", "jobs"} <= first.keys(), first

    launcher = launcher_of(a1.proc.pid)
    launcher.suspend()  # no supervisor can be forked: every start is held back
    try:
        late = wait_for("the scheduler to say it is overloaded",
                        lambda: (h := health(s))["overloaded"] and h)
        assert late["behind_seconds"] > 2, late
        assert behind_metric(s) > 2
        # More fires than the agent asks of its launcher at once: some wait in its queue.
        wait_for("a dozen fires held back", lambda: len(
            [r for r in s.ledger_rows("tick") if not r["started_at"]]) >= 12)
    finally:
        launcher.resume()
    resumed = time.time()

    def caught_up() -> list[dict] | None:
        if health(s)["overloaded"]:
            return None
        rows = [r for r in s.ledger_rows("tick") if at(r["nominal"]) <= resumed]
        return rows if all(r["state"] == "succeeded" for r in rows) else None

    rows = wait_for("every fire due before the resume to succeed", caught_up)
    assert not nominal_gaps([r["nominal"] for r in rows], 1.0), dump(rows)
    lines = [line.split() for line in marks.read_text().splitlines()]
    assert not duplicates([run_id for run_id, _ in lines]), f"a run started twice: {lines}"
    started = dict(lines)
    assert all(r["run_id"] in started for r in rows), (dump(rows), lines)
    # The launcher forks supervisors one after the other: their pids (each job's $PPID) give
    # the order the runs started in.
    order = [run_id for run_id, _ in sorted(lines, key=lambda x: int(x[1]))]
    assert order == sorted(order), order
