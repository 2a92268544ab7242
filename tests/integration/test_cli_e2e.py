"""The `hasched` CLI as a user runs it, against a real scheduler and a real agent on loopback."""

from __future__ import annotations

import json

import pytest
from harness import API_TOKEN, Cli, job_toml, wait_for

pytestmark = pytest.mark.integration


@pytest.fixture
def cli(lab, tmp_path) -> Cli:
    # misfire=skip: no catch-up run at start-up, so the only run is the one the test starts.
    lab.job("greet", job_toml("greet", "echo out-$((6*7)); echo err-line >&2", every="1h",
                              agent="w1", misfire="skip", concurrency="allow"))
    lab.agent("w1")
    return lab.scheduler("a", role="active").cli(tmp_path / "home", API_TOKEN)


def test_jobs_runs_status_end_to_end(cli):
    status = wait_for("the scheduler to be active", lambda: (
        (s := cli.json("status"))["role"] == "active" and s))
    assert status["jobs"] == 1 and status["state_store"] == "ok"

    listing = cli("jobs", "list").stdout.splitlines()
    assert listing[0].split()[:3] == ["NAME", "SCHEDULE", "TARGET"]
    assert listing[1].split()[0] == "greet" and "w1" in listing[1]
    assert [j["name"] for j in cli.json("jobs", "list")["jobs"]] == ["greet"]
    assert cli.json("jobs", "show", "greet")["agent"] == "w1"

    assert cli("jobs", "pause", "greet").stdout == "paused greet\n"
    assert cli.json("jobs", "show", "greet")["paused"] is True
    assert cli("jobs", "resume", "greet").stdout.startswith("resumed greet; next fire ")
    assert cli.json("jobs", "show", "greet")["paused"] is False

    started = cli("jobs", "run", "greet").stdout.strip()
    assert started.startswith("started greet@")
    run_id = started.removeprefix("started ")

    def finished():
        rows = cli.json("runs", "list", "--job", "greet")["runs"]
        return [r for r in rows if r["run_id"] == run_id
                and r["state"] not in ("scheduled", "dispatched", "running")]

    final = wait_for(f"run {run_id} to finish", finished)
    assert final[0]["state"] == "succeeded", final
    table = cli("runs", "list", "--job", "greet", "--state", "succeeded", "--since", "1h").stdout
    assert run_id in table and "succeeded" in table
    assert cli.json("runs", "show", run_id)["exit_code"] == 0
    assert "state:" in cli("runs", "show", run_id).stdout
    wait_for("stdout to be collected", lambda: cli("runs", "logs", run_id).stdout == "out-42\n")
    assert cli("runs", "logs", run_id, "--stderr").stdout == "err-line\n"

    # --wait follows the run to its end; a job name stands for its newest run.
    waited = cli("jobs", "run", "greet", "--wait").stdout.splitlines()
    second = waited[0].removeprefix("started ")
    assert waited[1] == f"{second}: succeeded"
    assert cli.json("runs", "show", "greet")["run_id"] == second
    assert cli("runs", "logs", "greet", "--stderr").stdout == "err-line\n"

    text = cli("status").stdout
    assert "role:" in text and "active" in text and "runs_running:" in text


def test_user_mistakes_are_one_line_exit_1(cli, tmp_path):
    wrong = tmp_path / "wrong-token"
    wrong.write_text("not-the-token\n")
    proc = cli("jobs", "list", ok=False, env={"HASCHED_TOKEN_FILE": str(wrong)})
    assert proc.returncode == 1 and proc.stdout == ""
    assert proc.stderr.startswith("hasched: missing or wrong bearer token (HTTP 401")
    assert proc.stderr.count("\n") == 1 and "not-the-token" not in proc.stderr

    proc = cli("jobs", "show", "nope", ok=False)
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1 and "HTTP 404" in proc.stderr

    proc = cli("runs", "show", "greet@2000-01-01T00:00:00Z", ok=False)
    assert proc.returncode == 1 and "HTTP 404" in proc.stderr

    proc = cli("runs", "list", "--state", "exploded", ok=False)
    assert proc.returncode == 1 and "'state'" in proc.stderr and "HTTP 400" in proc.stderr


def test_standby_refuses_run_now(lab, tmp_path):
    lab.job("greet", job_toml("greet", "true", every="1h", agent="w1"))
    lab.agent("w1")
    sched = lab.scheduler("b", role="standby")
    token_file = tmp_path / "cli-token"
    token_file.write_text(API_TOKEN + "\n")
    cli = Cli(f"http://127.0.0.1:{sched.port}", token_file, tmp_path / "home")
    wait_for("the API to answer", lambda: cli("status", ok=False).returncode == 0)
    assert cli.json("status")["role"] == "standby"
    proc = cli("jobs", "run", "greet", ok=False)
    assert proc.returncode == 1
    assert "this scheduler is standby" in proc.stderr and "HTTP 409" in proc.stderr


def test_truncated_output_and_limits_reach_the_user(lab, tmp_path):
    # An agent keeping 4KiB of each stream, and running jobs without cgroups.
    lab.agent("w1", output_limit='"4KiB"', cgroups="false")
    lab.job("loud", job_toml("loud", "head -c 10000 /dev/zero | tr '\\0' x", every="1h",
                             agent="w1", misfire="skip"))
    lab.job("capped", job_toml("capped", "true", every="1h", agent="w1", misfire="skip")
            + 'memory_max = "64MiB"\n')
    sched = lab.scheduler("a", role="active")
    token_file = tmp_path / "cli-token"
    token_file.write_text(API_TOKEN + "\n")
    cli = Cli(f"http://127.0.0.1:{sched.port}", token_file, tmp_path / "home")
    wait_for("the scheduler to be active", lambda: cli.json("status")["role"] == "active")

    waited = cli("jobs", "run", "loud", "--wait").stdout.splitlines()
    assert waited[1].endswith(": succeeded"), waited
    shown = dict(line.split(":", 1) for line in cli("runs", "show", "loud").stdout.splitlines())
    assert shown["truncated"].strip() == "stdout: 5904 bytes dropped", shown
    logs = wait_for("the output to be collected", lambda: (
        (out := cli("runs", "logs", "loud").stdout).startswith("x") and out))
    assert logs == "x" * 4096 + "\n[hasched: stdout truncated at the agent's output_limit: " \
                                "5904 more bytes were dropped]\n"
    assert cli("runs", "logs", "loud", "--stderr").stdout == ""  # complete: no mark

    # memory_max travels to the agent, which cannot enforce it: the run fails, saying why.
    cli("jobs", "run", "capped", "--wait", ok=False)
    run = wait_for("capped to end", lambda: (
        (r := cli.json("runs", "show", "capped"))["state"] == "failed" and r))
    assert run["reason"].endswith("memory_max: this agent cannot enforce it (it runs jobs "
                                  "without cgroups)"), run


def test_next_and_forecast_end_to_end(lab, tmp_path):
    """`jobs next` and `jobs forecast` against a real scheduler: its jobs and calendars."""
    lab.job("nightly", '[calendars.holidays.exclude]\n2027 = ["03-30"]\n\n'
                       '[job.nightly]\ncommand = ["/bin/true"]\nschedule = "30 2 * * *"\n'
                       'timezone = "Europe/Berlin"\nagent = "w1"\ncalendar = "holidays"\n')
    lab.agent("w1")
    sched = lab.scheduler("a", role="active")
    token_file = tmp_path / "cli-token"
    token_file.write_text(API_TOKEN + "\n")
    token_file.chmod(0o600)
    cli = Cli(f"http://127.0.0.1:{sched.port}", token_file, tmp_path / "home")
    wait_for("the scheduler to be active", lambda: cli.json("status")["role"] == "active")

    table = cli("jobs", "next", "nightly", "--count", "3", "--from", "2027-03-27T12:00Z").stdout
    assert "2027-03-28 03:00 CEST  2027-03-28T01:00:00Z  02:30 does not exist on 2027-03-28 " \
           "-> runs 03:00" in table
    assert "2027-03-31T00:30:00Z  skipped 2027-03-30: excluded by calendar holidays" in table
    answer = cli.json("jobs", "next", "nightly", "--count", "3", "--from", "2027-03-27T12:00Z")
    assert [f["utc"] for f in answer["fires"]] == [
        "2027-03-28T01:00:00Z", "2027-03-29T00:30:00Z", "2027-03-31T00:30:00Z"]
    window = cli.json("jobs", "forecast", "--from", "2027-03-27T12:00Z", "--to",
                      "2027-03-29T12:00Z")
    assert [(f["job"], f["utc"]) for f in window["fires"]] == [
        ("nightly", "2027-03-28T01:00:00Z"), ("nightly", "2027-03-29T00:30:00Z")]
    # the route is behind the token like every /v1 route; a bad count is a 400 with JSON
    import urllib.error
    import urllib.request

    url = f"http://127.0.0.1:{sched.port}/v1/jobs/nightly/next?count=0"
    for headers, status in (({}, 401), ({"Authorization": f"Bearer {API_TOKEN}"}, 400)):
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=30)
        assert info.value.code == status
        assert set(json.loads(info.value.read())) == {"error"}
