"""`hasched jobs validate`: offline, `file:line: field: message`, exit 1 on any error."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from scheduler.cli.main import cli

pytestmark = pytest.mark.unit

GOOD = """\
[job.hello]
command = ["/bin/echo", "hello"]
every = "1m"
agent = "db1"

[job.nightly]
command = ["/bin/true"]
schedule = "30 1 * * *"
pool = "linux"
"""

CONFIG = """\
[scheduler]
listen = "127.0.0.1:1"

[agents.db1]
url = "http://127.0.0.1:2"
token_file = "/nonexistent/db1.token"
labels = ["linux"]
"""


def validate(*args: str):
    # No --url or token anywhere: validate must not need the scheduler.
    return CliRunner().invoke(cli, ["jobs", "validate", *args], prog_name="hasched")


def test_good_file_counts_its_jobs(tmp_path):
    (tmp_path / "a.toml").write_text(GOOD)
    result = validate(str(tmp_path / "a.toml"))
    assert result.exit_code == 0, result.output
    assert result.output == "2 jobs OK\n"


def test_good_directory_counts_every_file(tmp_path):
    (tmp_path / "a.toml").write_text(GOOD)
    (tmp_path / "b.toml").write_text('[job.other]\ncommand = ["/bin/true"]\nevery = "5m"\n'
                                   'agent = "db1"\n')
    result = validate(str(tmp_path))
    assert result.output == "3 jobs OK\n" and result.exit_code == 0


def test_every_error_is_one_line_with_file_line_field(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('[job.broken]\ncommand = "echo"\nevery = "soon"\nagent = "db1"\n')
    result = validate(str(bad))
    assert result.exit_code == 1
    lines = result.output.splitlines()
    assert len(lines) == 2, result.output
    assert lines[0].startswith(f"{bad}:2: command: ")
    assert lines[1].startswith(f"{bad}:3: every: ")
    assert "OK" not in result.output and "Traceback" not in result.output


def test_config_checks_agent_and_pool_names(tmp_path):
    (tmp_path / "scheduler.toml").write_text(CONFIG)
    jobs = tmp_path / "a.toml"
    jobs.write_text(GOOD)
    assert validate(str(jobs), "--config", str(tmp_path / "scheduler.toml")).output == \
        "2 jobs OK\n"
    (tmp_path / "scheduler.toml").write_text(CONFIG.replace("db1", "db2"))
    result = validate(str(jobs), "--config", str(tmp_path / "scheduler.toml"))
    assert result.exit_code == 1
    assert result.output.splitlines()[0].startswith(f"{jobs}:4: agent: unknown agent 'db1'")


def test_bad_config_is_one_line(tmp_path):
    (tmp_path / "a.toml").write_text(GOOD)
    (tmp_path / "scheduler.toml").write_text("[scheduler]\nlisten = 5\n")
    result = validate(str(tmp_path / "a.toml"), "--config", str(tmp_path / "scheduler.toml"))
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"hasched: {tmp_path / 'scheduler.toml'}:2:")


def test_missing_path_is_one_line(tmp_path):
    result = validate(str(tmp_path / "absent.toml"))
    assert result.exit_code == 1
    assert result.output == f"hasched: {tmp_path / 'absent.toml'}: no such file or directory\n"


PREVIEW = """\
[job.nightly]
command = ["/bin/true"]
schedule = "30 2 * * *"
timezone = "Europe/Berlin"
agent = "db1"

[job.feb31]
command = ["/bin/true"]
schedule = "0 0 31 2 *"
agent = "db1"

[job.once]
command = ["/bin/true"]
at = "2020-01-01T08:00"
agent = "db1"
"""


def test_next_previews_offline_and_warns(tmp_path):
    path = tmp_path / "a.toml"
    path.write_text(PREVIEW)
    result = validate(str(path), "--next", "2", "--from", "2027-03-27T12:00Z")
    assert result.exit_code == 0, result.output
    out = result.output.splitlines()
    assert out[:3] == [
        f"{path}:7: job.feb31: warning: cron '0 0 31 2 *' (UTC) never fires "
        "(no fire in the next 28 years)",
        f"{path}:12: job.once: warning: at 2020-01-01T08:00 (UTC) is in the past: it will not "
        "fire",
        "3 jobs OK"]
    at = out.index("nightly: cron '30 2 * * *' (Europe/Berlin)")
    assert out[at + 2].endswith("02:30 does not exist on 2027-03-28 -> runs 03:00")
    assert out[at + 3].startswith("2027-03-29 02:30 CEST  2027-03-29T00:30:00Z")


def test_validate_json(tmp_path):
    import json

    path = tmp_path / "a.toml"
    path.write_text(PREVIEW)
    answer = json.loads(validate(str(path), "--next", "1", "--from", "2027-03-27T12:00Z",
                                 "--json").output)
    assert answer["ok"] is True and answer["jobs"] == 3 and len(answer["warnings"]) == 2
    assert [v["job"] for v in answer["next"]] == ["nightly", "feb31", "once"]
    assert answer["next"][0]["fires"][0]["utc"] == "2027-03-28T01:00:00Z"
    bad = tmp_path / "bad.toml"
    bad.write_text('[job.j]\ncommand = ["x"]\nschedule = "0 0 * * *"\nagent = "db1"\n'
                   'dst = { gap = "later" }\n')
    result = validate(str(bad), "--json")
    assert result.exit_code == 1
    assert json.loads(result.output)["errors"] == [
        f"{bad}:5: dst.gap: must be one of: after, skip; got 'later'"]


@pytest.mark.parametrize("value, shown", [('"99999999999d"', "'99999999999d'"),
                                          ("1e308", "1e+308"), ("inf", "inf"),
                                          ("99999999999999999999", "99999999999999999999")])
def test_an_interval_too_long_is_refused_by_validate(tmp_path, value, shown):
    # It used to pass ("1 job OK"), then crash the scheduler's start with an OverflowError.
    bad = tmp_path / "huge.toml"
    bad.write_text(f'[job.huge]\ncommand = ["/bin/true"]\nevery = {value}\nagent = "db1"\n')
    result = validate(str(bad))
    assert result.exit_code == 1
    assert result.output == f"{bad}:3: every: duration {shown} is too long (at most 100 years)\n"


def test_a_relative_cwd_is_refused_by_validate(tmp_path):
    bad = tmp_path / "cwd.toml"
    bad.write_text('[job.c]\ncommand = ["/bin/true"]\nevery = "1h"\nagent = "db1"\ncwd = "tmp"\n')
    result = validate(str(bad))
    assert result.exit_code == 1
    assert result.output == f"{bad}:5: cwd: must be an absolute path, got 'tmp'\n"
