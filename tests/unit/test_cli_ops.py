"""The operators' CLI: runs cancel, audit, jobs show in human units, --wait progress and
--timeout, runs logs --follow, global options before the sub-command, 403s in one line."""

from __future__ import annotations

import json
import shlex

import pytest
import test_cli_commands
from click.testing import CliRunner
from test_access import VIEWER_T
from test_api import TOKEN
from test_cli_commands import FakeService, ServerThread, hasched, one_line_error

from scheduler.auth import Principal, Tokens
from scheduler.cli import follow
from scheduler.cli.main import cli

pytestmark = pytest.mark.unit

api = test_cli_commands.api  # the fixture: the real API app over a FakeService, on loopback
RUNNING, SCHEDULED = "r@2026-12-01T02:00:00Z", "s@2026-12-01T02:00:00Z"


@pytest.fixture(autouse=True)
def quick_polls(monkeypatch):
    monkeypatch.setattr(follow, "POLL", 0.01)


def scripted(service: FakeService, run_id: str, states: list[dict]) -> None:
    """The run's view goes through `states`, one per GET, then stays at the last."""
    seen = {"n": 0}
    plain = service.get_run

    def get_run(rid: str):
        if rid != run_id:
            return plain(rid)
        view = states[min(seen["n"], len(states) - 1)]
        seen["n"] += 1
        return {"run_id": run_id, "job": "nightly", "attempt": 1, **view}

    service.get_run = get_run


def test_jobs_show_prints_durations_a_shell_line_and_retries_in_words(api):
    api.service.jobs["nightly"] = {
        "name": "nightly", "paused": False, "every": 300.0, "timeout": 5400.0,
        "command": ["backup", "--to", "/mnt/a b"], "retries": {"count": 2, "delay": 30.0},
        "misfire": {"policy": "run-once", "grace": 3600.0}, "env": {"MODE": "full run"},
        "dst": {"gap": "shift", "repeat": "first"}, "secret_env": {"PW": "<secret>"}}
    lines = hasched("jobs", "show", "nightly", *api.args).output.splitlines()
    shown = {k.rstrip(":"): v.strip() for k, _, v in (line.partition(" ") for line in lines)}
    assert shown["every"] == "5m" and shown["timeout"] == "1h30m"
    assert shown["command"] == "backup --to '/mnt/a b'"
    assert shlex.split(shown["command"]) == ["backup", "--to", "/mnt/a b"]
    assert shown["retries"] == "2, 30s apart" and shown["misfire"] == "run-once within 1h"
    assert shown["env"] == "MODE='full run'" and shown["dst"] == "gap shift, repeat first"
    assert shown["secret_env"] == "PW=<secret>"
    raw = json.loads(hasched("jobs", "show", "nightly", "--json", *api.args).output)
    assert raw["every"] == 300.0 and raw["command"] == ["backup", "--to", "/mnt/a b"]


def test_global_options_before_the_subcommand(api):
    url, token_file = api.args[1], api.args[3]
    listed = hasched("--url", url, "--token-file", token_file, "jobs", "list")
    assert listed.exit_code == 0 and listed.output.split()[:2] == ["NAME", "SCHEDULE"]
    shown = hasched("--url", url, "--token-file", token_file, "--json", "jobs", "show",
                    "nightly")
    assert json.loads(shown.output)["name"] == "nightly"
    # The option after the sub-command wins.
    far = hasched("--url", "http://127.0.0.1:1", "jobs", "list", *api.args)
    assert far.exit_code == 0


def test_runs_cancel_scheduled_running_and_ended(api):
    api.service.runs[SCHEDULED] = {"run_id": SCHEDULED, "job": "nightly", "state": "scheduled"}
    api.service.runs[RUNNING] = {"run_id": RUNNING, "job": "nightly", "state": "running",
                                 "agent": "w1"}
    done = hasched("runs", "cancel", SCHEDULED, *api.args)
    assert done.exit_code == 0 and done.output == f"cancelled {SCHEDULED} attempt 1\n"
    asked = hasched("runs", "cancel", RUNNING, *api.args)
    assert asked.output.startswith(f"cancel asked of {RUNNING} attempt 1 on w1; see: ")
    line = one_line_error(hasched("runs", "cancel", "nightly@2026-12-01T01:30:00Z", *api.args))
    assert "already ended (succeeded): nothing to cancel (HTTP 409" in line
    assert [o[:2] for o in api.service.orders] == [("cancel", SCHEDULED), ("cancel", RUNNING)]


def test_runs_cancel_by_job_name_needs_exactly_one_unfinished_run(api):
    line = one_line_error(hasched("runs", "cancel", "nightly", *api.args))
    assert line == "hasched: job 'nightly' has 0 unfinished runs; give a run id"
    assert api.service.orders == []


def test_runs_cancel_wait_follows_the_run_to_its_end(api):
    api.service.runs[RUNNING] = {"run_id": RUNNING, "job": "nightly", "state": "running"}
    scripted(api.service, RUNNING, [{"state": "running", "agent": "w1"},
                                    {"state": "cancelled", "reason": "cancelled"}])
    result = CliRunner().invoke(cli, ["runs", "cancel", RUNNING, "--wait", *api.args])
    assert result.exit_code == 0, result.output
    assert result.stdout == f"cancelled {RUNNING} attempt 1\n"
    assert result.stderr.splitlines()[-1].endswith("attempt 1: cancelled: cancelled")


def test_a_viewers_cancel_is_one_line_403_and_nothing_is_done(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "none"))
    token_file = tmp_path / "token"
    token_file.write_text(VIEWER_T + "\n")
    service = FakeService()
    service.runs[RUNNING] = {"run_id": RUNNING, "job": "nightly", "state": "running"}
    tokens = Tokens([(VIEWER_T, Principal("vera", "viewer")),
                     (TOKEN, Principal("otto", "operator"))])
    with ServerThread(service, tokens) as server:
        line = one_line_error(hasched("--url", f"http://127.0.0.1:{server.port}",
                                      "--token-file", str(token_file), "runs", "cancel",
                                      RUNNING))
    assert line.startswith(f"hasched: token 'vera' is a viewer: POST /v1/runs/{RUNNING}/cancel "
                           "needs operator (HTTP 403 from ")
    assert service.orders == [] and service.runs[RUNNING]["state"] == "running"


def test_jobs_run_wait_shows_each_change_of_state_once(api):
    scripted(api.service, "nightly@2026-12-01T02:00:00Z", [
        {"state": "scheduled"}, {"state": "scheduled"}, {"state": "running", "agent": "w1"},
        {"state": "running", "agent": "w1"}, {"state": "succeeded", "agent": "w1"}])
    result = CliRunner().invoke(cli, ["jobs", "run", "nightly", "--wait", *api.args])
    assert result.exit_code == 0, result.output
    progress = [line.split("] ", 1)[1] for line in result.stderr.splitlines()]
    assert progress == ["nightly@2026-12-01T02:00:00Z attempt 1: scheduled",
                        "nightly@2026-12-01T02:00:00Z attempt 1: running on w1",
                        "nightly@2026-12-01T02:00:00Z attempt 1: succeeded on w1"]
    assert result.stdout.splitlines()[-1] == "nightly@2026-12-01T02:00:00Z: succeeded"


def test_jobs_run_wait_timeout_stops_waiting_with_exit_124(api):
    scripted(api.service, "nightly@2026-12-01T02:00:00Z", [{"state": "running"}])
    result = CliRunner().invoke(cli, ["jobs", "run", "nightly", "--wait", "--timeout", "0.1s",
                                      *api.args])
    assert result.exit_code == follow.TIMED_OUT_EXIT
    assert result.stderr.splitlines()[-1] == ("hasched: nightly@2026-12-01T02:00:00Z still "
                                              "running after 0.1s; no longer waiting (the run "
                                              "goes on)")


@pytest.mark.parametrize("args,message", [
    (["--timeout", "soon", "--wait"], "not a duration: 'soon'"),
    (["--timeout", "0s", "--wait"], "must be more than 0s"),
    (["--timeout", "5m"], "--timeout goes with --wait"),
])
def test_bad_wait_options_are_refused_and_nothing_is_started(api, args, message):
    result = hasched("jobs", "run", "nightly", *args, *api.args)
    assert result.exit_code == 2 and message in result.output
    assert api.service.orders == []


def test_runs_logs_follow_prints_the_output_as_it_grows_and_ends_with_the_run(api):
    rid = RUNNING
    api.service.runs[rid] = {"run_id": rid, "job": "nightly", "state": "running"}
    chunks = ["", "one\n", "one\ntwo", "one\ntwo\nthré\n", "one\ntwo\nthré\n"]
    calls = {"n": 0}
    scripted(api.service, rid, [{"state": "running"}] * 4 + [{"state": "succeeded"}])

    async def run_output(run_id: str, stream: str = "stdout") -> str:
        text = chunks[min(calls["n"], len(chunks) - 1)]
        calls["n"] += 1
        return text

    api.service.run_output = run_output
    result = hasched("runs", "logs", rid, "--follow", *api.args)
    assert result.exit_code == 0, result.output
    assert result.output == "one\ntwo\nthré\n" and calls["n"] == 5


def test_runs_logs_follow_does_not_go_with_json(api):
    result = hasched("runs", "logs", RUNNING, "--follow", "--json", *api.args)
    assert result.exit_code == 2 and "--follow" in result.output


def test_audit_table_and_json(api):
    table = hasched("audit", "--job", "nightly", "--since", "1d", *api.args)
    assert table.exit_code == 0
    head, row = table.output.splitlines()
    assert head.split() == ["AT", "WHO", "ROLE", "FROM", "ACTION", "JOB", "RUN", "DETAIL"]
    assert row.split()[1:6] == ["alice", "operator", "127.0.0.1", "pause", "nightly"]
    (call,) = api.service.audit_calls
    assert call["job"] == "nightly" and call["since"] and call["limit"] == 50
    entries = json.loads(hasched("audit", "--json", *api.args).output)["entries"]
    assert entries[0]["actor"] == "alice"


def test_runs_logs_follow_goes_on_with_a_retrys_output_after_a_line_saying_so(api):
    api.service.runs[RUNNING] = {"run_id": RUNNING, "job": "nightly", "state": "running"}
    views = [{"attempt": 1, "state": "running"}, {"attempt": 2, "state": "running"},
             {"attempt": 2, "state": "succeeded"}]
    seen = {"n": 0}

    def get_run(rid: str):
        view = views[min(seen["n"], len(views) - 1)]
        seen["n"] += 1
        return {"run_id": rid, "job": "nightly", **view}

    async def run_output(run_id: str, stream: str = "stdout") -> str:
        return "first try\n" if seen["n"] <= 1 else "second try\n"

    api.service.get_run, api.service.run_output = get_run, run_output
    result = CliRunner().invoke(cli, ["runs", "logs", RUNNING, "--follow", *api.args])
    assert result.exit_code == 0, result.output
    assert result.stdout == "first try\nsecond try\n"
    assert result.stderr == "[hasched: attempt 2]\n"
