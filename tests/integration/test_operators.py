"""What operators do through the CLI, against a real scheduler and agent on loopback: cancel a
running run (its processes end), roles refuse a viewer's pause, the audit trail names the
operator, and `runs logs --follow` prints a running job's output as it comes."""

from __future__ import annotations

import psutil
import pytest
from harness import OPERATOR, OPERATOR_TOKEN, VIEWER_TOKEN, job_toml, wait_file, wait_for

pytestmark = pytest.mark.integration


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def started(cli, job: str) -> str:
    line = cli("jobs", "run", job).stdout.strip()
    assert line.startswith(f"started {job}@"), line
    return line.split()[1]


def test_cancelling_a_running_run_from_the_cli_ends_it_and_its_processes(lab, tmp_path):
    pids = tmp_path / "pids"
    # A shell and a child of its own: the cancel must reach both (the run's whole group).
    lab.job("long", job_toml("long", f"sleep 300 & echo $$ $! > {pids}; wait", every="1h",
                             agent="w1", misfire="skip"))
    lab.agent("w1")
    sched = lab.scheduler("a")
    cli = sched.cli(tmp_path / "home", OPERATOR_TOKEN)
    run_id = started(cli, "long")
    shell, child = (int(p) for p in wait_file(pids).split())
    assert not gone(shell) and not gone(child)
    assert cli.json("runs", "show", run_id)["state"] == "running"

    result = cli("runs", "cancel", run_id, "--wait", "--timeout", "2m")
    assert result.stdout == f"cancelled {run_id} attempt 1\n"
    run = cli.json("runs", "show", run_id)
    assert run["state"] == "cancelled"
    wait_for("the run's processes to end", lambda: gone(shell) and gone(child))
    (entry,) = cli.json("audit", "--job", "long")["entries"][:1]
    assert (entry["action"], entry["run_id"], entry["actor"]) == ("cancel", run_id, OPERATOR)
    assert not any(r["state"] == "scheduled" for r in sched.ledger_rows("long"))  # no retry

    again = cli("runs", "cancel", run_id, ok=False)
    assert again.returncode == 1 and again.stdout == ""
    assert again.stderr.count("\n") == 1 and "already ended (cancelled)" in again.stderr


def test_a_viewer_is_refused_pause_and_the_audit_trail_shows_the_operators(lab, tmp_path):
    lab.job("nightly", job_toml("nightly", "true", every="1h", agent="w1", misfire="skip"))
    lab.agent("w1")
    sched = lab.scheduler("a")
    viewer = sched.cli(tmp_path / "v", VIEWER_TOKEN)
    operator = sched.cli(tmp_path / "o", OPERATOR_TOKEN)

    assert viewer.json("jobs", "show", "nightly")["paused"] is False  # a viewer reads
    refused = viewer("jobs", "pause", "nightly", ok=False)
    assert refused.returncode == 1 and refused.stdout == ""
    assert refused.stderr.startswith("hasched: token 'vera-viewer' is a viewer: POST "
                                     "/v1/jobs/nightly/pause needs operator (HTTP 403 from ")
    assert refused.stderr.count("\n") == 1
    assert viewer.json("jobs", "show", "nightly")["paused"] is False  # nothing changed
    assert viewer.json("audit")["entries"] == []  # a refusal changes nothing, the trail too

    operator("jobs", "pause", "nightly")
    assert viewer.json("jobs", "show", "nightly")["paused"] is True
    (entry,) = viewer.json("audit", "--job", "nightly")["entries"]
    assert {k: entry[k] for k in ("actor", "role", "source", "action", "job")} == {
        "actor": OPERATOR, "role": "operator", "source": "127.0.0.1", "action": "pause",
        "job": "nightly"}
    table = viewer("audit").stdout.splitlines()
    assert table[1].split()[1:5] == [OPERATOR, "operator", "127.0.0.1", "pause"]
    for text in (table, sched.proc.logtext()):
        assert OPERATOR_TOKEN not in str(text) and VIEWER_TOKEN not in str(text)


def test_runs_logs_follow_prints_output_as_it_comes_and_ends_with_the_run(lab, tmp_path):
    go = tmp_path / "go"
    lab.job("talk", job_toml("talk", f"echo line-1; while [ ! -e {go} ]; do sleep 0.1; done; "
                                     "echo line-2", every="1h", agent="w1", misfire="skip"))
    lab.agent("w1")
    cli = lab.scheduler("a").cli(tmp_path / "home", OPERATOR_TOKEN)
    run_id = started(cli, "talk")
    follow = cli.popen("runs", "logs", "--follow", run_id)
    try:
        assert follow.stdout.readline() == "line-1\n"
        # The first line came while the run was still going: it waits for `go`.
        assert cli.json("runs", "show", run_id)["state"] == "running"
        assert follow.poll() is None
        go.touch()
        assert follow.stdout.readline() == "line-2\n"
        assert follow.wait(timeout=60) == 0
        assert follow.stdout.read() == ""
    finally:
        if follow.poll() is None:
            follow.kill()
    assert cli.json("runs", "show", run_id)["state"] == "succeeded"
