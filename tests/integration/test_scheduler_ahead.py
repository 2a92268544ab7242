"""A scheduler sending planned fires ahead (`dispatch_lead`): each run reaches its agent before
its nominal time and starts there at it, not before."""

from __future__ import annotations

from datetime import datetime

import pytest
from harness import Lab, Scheduler, dump, duplicates, job_toml, wait_for

pytestmark = pytest.mark.integration


def at(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def ahead_of_a1(lab: Lab, lead: str, tick: str) -> Scheduler:
    """Agent a1, the job 'tick' and a scheduler sending planned fires `lead` early."""
    lab.agent("a1")
    lab.job("tick", tick)
    s = Scheduler(lab.root, "a", lab.agents, lab.jobs_dir)
    s.config.write_text(s.config.read_text().replace(
        'log_level = "debug"', f'log_level = "debug"\ndispatch_lead = "{lead}"'))
    lab.schedulers.append(s)
    return s.start()


def test_planned_runs_are_sent_ahead_and_start_at_their_nominal_time(lab: Lab) -> None:
    marks = lab.root / "marks"
    s = ahead_of_a1(lab, "5s", job_toml("tick", every="3s", agent="a1", command=(
        f'echo "$HASCHED_RUN_ID $(date +%s.%N)" >> "{marks}"')))

    def done() -> list[dict]:
        rows = [r for r in s.ledger_rows("tick") if r["state"] == "succeeded"]
        return rows if len(rows) >= 3 else []

    rows = wait_for("3 runs of 'tick' collected as succeeded", done)
    lines = [line.split() for line in marks.read_text().splitlines()]
    assert not duplicates([run_id for run_id, _ in lines]), f"a run started twice: {lines}"
    ran = dict(lines)
    ahead = [r for r in rows if at(r["dispatched_at"]) < at(r["nominal"])]
    assert ahead, f"no run was sent before its nominal time: {dump(rows)}"
    for r in rows:
        assert at(r["started_at"]) >= at(r["nominal"]), dump(r)
        assert float(ran[r["run_id"]]) >= at(r["nominal"]), (r["run_id"], ran)


def test_pausing_a_job_recalls_a_fire_already_sent_ahead(lab: Lab) -> None:
    import json
    import time
    import urllib.request

    from harness import API_TOKEN

    marks = lab.root / "marks"
    marks.touch()
    s = ahead_of_a1(lab, "8s", job_toml("tick", every="10s", agent="a1",
                                        command=f'echo "$HASCHED_RUN_ID" >> "{marks}"'))

    def sent_ahead() -> dict | None:  # with a second to spare before its time
        return next((r for r in s.ledger_rows("tick") if r["state"] in ("dispatched", "running")
                     and not r["started_at"] and at(r["nominal"]) > time.time() + 1), None)

    row = wait_for("a fire of 'tick' sent ahead", sent_ahead)
    request = urllib.request.Request(
        f"http://127.0.0.1:{s.port}/v1/jobs/tick/pause", data=b"{}", method="POST",
        headers={"Authorization": f"Bearer {API_TOKEN}", "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as answer:
        assert json.load(answer)["paused"] is True
    recalled = wait_for(f"{row['run_id']} cancelled", lambda: next(
        (r for r in s.ledger_rows("tick") if r["run_id"] == row["run_id"]
         and r["state"] == "cancelled"), None))
    assert recalled["started_at"] is None, dump(recalled)
    wait_for("its nominal time to pass", lambda: time.time() > at(row["nominal"]) + 2,
             deadline=30)
    assert row["run_id"] not in marks.read_text().split(), "the recalled fire ran anyway"
