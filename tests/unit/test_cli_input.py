"""CLI bad input: one clear line, non-zero exit, no traceback, nothing sent."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from scheduler.cli.main import COMMANDS, cli

pytestmark = pytest.mark.unit


@pytest.fixture(autouse=True)
def no_user_config(tmp_path, monkeypatch):
    for var in ("HASCHED_URL", "HASCHED_TOKEN_FILE", "HASCHED_TOKEN", "HASCHED_CA"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))


def hasched(*args: str):
    return CliRunner().invoke(cli, list(args), prog_name="hasched")


def error_line(result, code: int = 1) -> str:
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    return result.output.strip().splitlines()[-1]


def test_version():
    result = hasched("--version")
    assert result.exit_code == 0 and result.output.startswith("hasched, version ")


def test_root_help_lists_every_command():
    result = hasched("--help")
    assert result.exit_code == 0
    for name in COMMANDS:
        assert f"  {name} " in result.output


@pytest.mark.parametrize("args", [
    ["jobs", "list"], ["jobs", "show"], ["jobs", "run"], ["jobs", "pause"], ["jobs", "resume"],
    ["jobs", "validate"], ["runs", "list"], ["runs", "show"], ["runs", "logs"], ["status"],
    ["runs", "cancel"], ["audit"],
])
def test_every_command_help_has_an_example(args):
    result = hasched(*args, "--help")
    assert result.exit_code == 0 and "Example: hasched " in result.output


def test_no_token_configured():
    line = error_line(hasched("jobs", "list", "--url", "http://127.0.0.1:1"))
    assert line.startswith("hasched: no API token")


def test_missing_token_file(tmp_path):
    line = error_line(hasched("jobs", "list", "--token-file", str(tmp_path / "absent")))
    assert line == f"hasched: token file {tmp_path / 'absent'}: No such file or directory"


def test_empty_token_file(tmp_path):
    (tmp_path / "t").write_text("# only a comment\n\n")
    line = error_line(hasched("jobs", "list", "--token-file", str(tmp_path / "t")))
    assert line == f"hasched: token file {tmp_path / 't'}: no token in it"


def test_bad_url():
    line = error_line(hasched("jobs", "list", "--url", "127.0.0.1:8480"))
    assert "must look like http://HOST:PORT" in line


def test_broken_cli_toml(tmp_path):
    (tmp_path / "hasched").mkdir()
    (tmp_path / "hasched" / "cli.toml").write_text("url = [\n")
    line = error_line(hasched("jobs", "list"))
    assert line.startswith(f"hasched: {tmp_path / 'hasched' / 'cli.toml'}: ")


@pytest.mark.parametrize("args,names", [
    (["runs", "list", "--limit", "ten"], "'--limit'"),
    (["runs", "list", "--limit", "0"], "'--limit'"),
    (["runs", "list", "--since", "yesterday"], "'--since'"),
])
def test_bad_options_name_the_option(args, names):
    line = error_line(hasched(*args), code=2)
    assert names in line
