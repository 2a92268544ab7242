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
