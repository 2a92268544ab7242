"""The CLI's REST commands against the real API app (on loopback) over a fake Service.

What is tested is our own client and command logic: the URL and headers sent, the tables and
JSON printed, and one-line errors with exit 1 for 401, 404, 409 and an unreachable scheduler.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading

import pytest
from aiohttp import web
from click.testing import CliRunner
from test_api import RUN_ID, TOKEN, FakeService

from scheduler.api import make_app
from scheduler.cli.main import cli
from scheduler.metrics import Metrics

pytestmark = pytest.mark.unit


class ServerThread:
    def __init__(self, service: FakeService, tokens=None) -> None:
        self.service = service
        self.tokens = tokens or frozenset({TOKEN})
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        app = make_app(self.service, self.tokens, Metrics())
        self.runner = web.AppRunner(app)
        self.loop.run_until_complete(self.runner.setup())
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        self.loop.run_until_complete(web.SockSite(self.runner, sock).start())
        self.ready.set()
        self.loop.run_forever()
        self.loop.run_until_complete(self.runner.cleanup())

    def __enter__(self) -> ServerThread:
        self.thread.start()
        assert self.ready.wait(30), "test API server did not start within 30 s"
        return self

    def __exit__(self, *exc) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(30)


@pytest.fixture
def api(tmp_path, monkeypatch):
    for var in ("HASCHED_URL", "HASCHED_TOKEN_FILE", "HASCHED_TOKEN", "HASCHED_CA"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "no-config"))
    token_file = tmp_path / "token"
    token_file.write_text(f"# the API token\n{TOKEN}\n")
    with ServerThread(FakeService()) as server:
        server.args = ["--url", f"http://127.0.0.1:{server.port}", "--token-file",
                       str(token_file)]
        yield server


def hasched(*args: str):
    return CliRunner().invoke(cli, list(args), prog_name="hasched")


def one_line_error(result) -> str:
    assert result.exit_code == 1, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("hasched: "), result.output
    assert "Traceback" not in result.output
    return lines[0]


def test_jobs_list_table_and_json(api):
    result = hasched("jobs", "list", *api.args)
    assert result.exit_code == 0, result.output
    header, row = result.output.splitlines()
    assert header.split() == ["NAME", "SCHEDULE", "TARGET", "NEXT", "FIRE"]
    assert row.split()[0] == "nightly"
    result = hasched("jobs", "list", "--json", *api.args)
    assert json.loads(result.output) == {"jobs": api.service.list_jobs(),
                                         "definitions": {"stale": False}}


def test_jobs_list_and_status_say_when_definitions_are_stale(api):
    api.service.stale = {"stale": True, "failed_at": "2026-12-01T10:00:00.123456Z",
                         "errors": ["/etc/hasched/jobs/a.toml:3: every: not a duration: 'x'"]}
    result = hasched("jobs", "list", *api.args)
    assert result.exit_code == 0
    warning = [line for line in result.output.splitlines() if line.startswith("warning:")]
    assert warning == ["warning: job definitions are STALE: the reload at 2026-12-01T10:00:00Z "
                       "failed with 1 error(s); first: /etc/hasched/jobs/a.toml:3: every: not a "
                       "duration: 'x'"]
    answer = json.loads(hasched("status", "--json", *api.args).output)
    assert answer["definitions"].startswith("job definitions are STALE")
    api.service.stale = None
    assert json.loads(hasched("status", "--json", *api.args).output)["definitions"] == "current"


def test_jobs_show_run_pause_resume(api):
    result = hasched("jobs", "show", "nightly", *api.args)
    assert result.exit_code == 0 and "name:" in result.output and "nightly" in result.output
    result = hasched("jobs", "run", "nightly", *api.args)
    assert result.output == "started nightly@2026-12-01T02:00:00Z\n"
    result = hasched("jobs", "pause", "nightly", *api.args)
    assert result.output == "paused nightly\n" and api.service.jobs["nightly"]["paused"] is True
    result = hasched("jobs", "resume", "nightly", *api.args)
    assert result.exit_code == 0 and api.service.jobs["nightly"]["paused"] is False


def test_runs_list_sends_filters(api):
    result = hasched("runs", "list", "--job", "nightly", "--state", "failed",
                     "--since", "2026-12-01T00:00:00Z", "--limit", "3", *api.args)
    assert result.exit_code == 0, result.output
    assert RUN_ID in result.output
    assert api.service.list_runs_calls[-1] == {
        "job": "nightly", "state": "failed", "since": "2026-12-01T00:00:00Z", "until": None,
        "limit": 3}


def test_runs_list_since_accepts_a_span_back_from_now(api):
    result = hasched("runs", "list", "--since", "1h30m", "--json", *api.args)
    assert result.exit_code == 0, result.output
    since = api.service.list_runs_calls[-1]["since"]
    assert since.endswith("Z") and len(since) == 20


def test_runs_show_and_logs_encode_the_run_id(api):
    result = hasched("runs", "show", RUN_ID, "--json", *api.args)
    assert json.loads(result.output)["run_id"] == RUN_ID
    result = hasched("runs", "logs", RUN_ID, *api.args)
    assert result.output == f"stdout of {RUN_ID}\n"
    result = hasched("runs", "logs", RUN_ID, "--stderr", *api.args)
    assert result.output == f"stderr of {RUN_ID}\n"


def test_truncated_output_is_marked_in_runs_show_and_logs(api):
    api.service.runs[RUN_ID].update(stdout_dropped=95904, stderr_dropped=0)
    shown = hasched("runs", "show", RUN_ID, *api.args)
    assert "truncated: stdout: 95904 bytes dropped" in shown.output.splitlines(), shown.output
    logs = hasched("runs", "logs", RUN_ID, *api.args)
    assert logs.output.splitlines()[-1] == (
        "[hasched: stdout truncated at the agent's output_limit: 95904 more bytes were dropped]")
    assert logs.output.startswith(f"stdout of {RUN_ID}\n")
    as_json = json.loads(hasched("runs", "logs", RUN_ID, "--json", *api.args).output)
    assert as_json["truncated"] is True and as_json["dropped"] == 95904
    # The other stream was complete: no mark.
    assert hasched("runs", "logs", RUN_ID, "--stderr", *api.args).output == \
        f"stderr of {RUN_ID}\n"
    api.service.runs[RUN_ID].update(stdout_dropped=None)
    assert "truncated: no" in hasched("runs", "show", RUN_ID, *api.args).output.splitlines()


def test_status_shows_health_and_counts(api):
    result = hasched("status", "--json", *api.args)
    assert result.exit_code == 0, result.output
    answer = json.loads(result.output)
    assert answer["role"] == "active" and answer["epoch"] == 7
    assert answer["jobs_paused"] == 0 and "runs_running" in answer


def test_wrong_token_is_one_line_exit_1(api, tmp_path):
    bad = tmp_path / "bad"
    bad.write_text("not-the-token\n")
    line = one_line_error(hasched("jobs", "list", "--url", api.args[1], "--token-file", str(bad)))
    assert "missing or wrong bearer token" in line and "HTTP 401" in line
    assert "not-the-token" not in line


def test_unknown_job_is_one_line_exit_1(api):
    line = one_line_error(hasched("jobs", "show", "nope", *api.args))
    assert "nope" in line and "HTTP 404" in line


def test_standby_refusal_is_one_line_exit_1(api):
    api.service.role = "standby"
    line = one_line_error(hasched("jobs", "run", "nightly", *api.args))
    assert "this scheduler is standby" in line and "HTTP 409" in line


def test_unreachable_scheduler_is_one_line_exit_1(api):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, not listening: connections are refused
        line = one_line_error(hasched("jobs", "list", "--url", f"http://127.0.0.1:{port}",
                                      *api.args[2:]))
    assert "cannot reach the scheduler" in line


def test_settings_from_environment(api, tmp_path, monkeypatch):
    monkeypatch.setenv("HASCHED_URL", api.args[1])
    monkeypatch.setenv("HASCHED_TOKEN", TOKEN)
    assert hasched("jobs", "list", "--json").exit_code == 0
    monkeypatch.delenv("HASCHED_TOKEN")
    monkeypatch.setenv("HASCHED_TOKEN_FILE", api.args[3])
    assert hasched("jobs", "list", "--json").exit_code == 0


def test_settings_from_cli_toml(api, tmp_path, monkeypatch):
    conf = tmp_path / "xdg" / "hasched"
    conf.mkdir(parents=True)
    (conf / "cli.toml").write_text(f'url = "{api.args[1]}"\ntoken_file = "{api.args[3]}"\n')
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    result = hasched("jobs", "list", "--json")
    assert result.exit_code == 0, result.output


def test_options_beat_environment(api, monkeypatch):
    monkeypatch.setenv("HASCHED_URL", "http://127.0.0.1:1")
    monkeypatch.setenv("HASCHED_TOKEN", "wrong")
    assert hasched("jobs", "list", *api.args).exit_code == 0


def test_jobs_next_table_and_json(api):
    result = hasched("jobs", "next", "nightly", "--count", "2", "--from", "2027-03-27T12:00Z",
                     *api.args)
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == [
        "nightly: cron '30 2 * * *' (Europe/Berlin)",
        "LOCAL (Europe/Berlin)  UTC                   NOTE",
        "2027-03-28 03:00 CEST  2027-03-28T01:00:00Z  02:30 does not exist on 2027-03-28 -> "
        "runs 03:00",
        "2027-03-29 02:30 CEST  2027-03-29T00:30:00Z  -"]
    assert api.service.preview_calls[-1][1:3] == ("nightly", 2)
    result = hasched("jobs", "next", "nightly", "--count", "2", "--from", "2027-03-27T12:00Z",
                     "--json", *api.args)
    answer = json.loads(result.output)
    assert [f["utc"] for f in answer["fires"]] == ["2027-03-28T01:00:00Z",
                                                  "2027-03-29T00:30:00Z"]


def test_jobs_next_unknown_job_and_bad_count(api):
    assert "no job named 'nope'" in one_line_error(hasched("jobs", "next", "nope", *api.args))
    result = hasched("jobs", "next", "nightly", "--count", "0", *api.args)
    assert result.exit_code == 2 and "--count" in result.output  # refused before asking
    assert api.service.preview_calls == []


def test_jobs_forecast_table_and_json(api):
    args = ["--from", "2027-10-30T00:00Z", "--to", "2027-11-01T00:00Z"]
    result = hasched("jobs", "forecast", *args, *api.args)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].split() == ["UTC", "JOB", "LOCAL", "ZONE", "NOTE"]
    assert lines[1].split() == ["2027-10-30T00:30:00Z", "nightly", "2027-10-30", "02:30", "CEST",
                                "Europe/Berlin", "-"]
    assert lines[2].startswith("2027-10-31T00:30:00Z  nightly  2027-10-31 02:30 CEST  "
                               "Europe/Berlin  02:30 happens twice")
    answer = json.loads(hasched("jobs", "forecast", *args, "--json", *api.args).output)
    assert answer["from"] == "2027-10-30T00:00:00Z" and len(answer["fires"]) == 2
    result = hasched("jobs", "forecast", "--from", "2027-11-01T00:00Z", "--to",
                     "2027-10-30T00:00Z", *api.args)
    assert one_line_error(result) == ("hasched: --to 2027-10-30T00:00:00Z is not after --from "
                                      "2027-11-01T00:00:00Z")
