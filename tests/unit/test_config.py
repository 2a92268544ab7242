from pathlib import Path

import pytest

from scheduler.config import (
    AgentRef,
    ConfigError,
    TLSConfig,
    load_agent_config,
    load_scheduler_config,
    read_token,
    read_tokens,
)

pytestmark = pytest.mark.unit

SCHEDULER = """\
[scheduler]
listen = "127.0.0.1:9480"
state_dir = "state"
run_dir = "/tmp/hasched-run"
jobs_dir = "jobs"
api_tokens_file = "api-tokens"
log_level = "debug"
tls = { cert = "c.pem", key = "k.pem", ca = "/etc/ca.pem" }
calendars_file = "calendars.toml"

[agents.db1]
url = "http://192.168.56.13:8481"
token_file = "/etc/hasched/agents/db1.token"
labels = ["linux", "db"]

[agents.db2]
url = "https://db2:8481/"
token_file = "db2.token"
"""


def write(tmp_path: Path, text: str, name: str = "conf.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_scheduler_config_full(tmp_path):
    config = load_scheduler_config(write(tmp_path, SCHEDULER))
    assert (config.listen_host, config.listen_port) == ("127.0.0.1", 9480)
    assert config.state_dir == tmp_path / "state"
    assert config.run_dir == Path("/tmp/hasched-run")
    assert config.jobs_dir == tmp_path / "jobs"
    assert config.api_tokens_file == tmp_path / "api-tokens"
    assert config.log_level == "debug"
    assert config.tls == TLSConfig(tmp_path / "c.pem", tmp_path / "k.pem", Path("/etc/ca.pem"))
    assert config.calendars_file == tmp_path / "calendars.toml"
    assert config.agents == {
        "db1": AgentRef("db1", "http://192.168.56.13:8481",
                        Path("/etc/hasched/agents/db1.token"), ("linux", "db"), None),
        "db2": AgentRef("db2", "https://db2:8481", tmp_path / "db2.token", (), None),
    }


def test_the_replication_table(tmp_path):
    config = load_scheduler_config(write(tmp_path, '[replication]\nmode = "async"\n'
                                         'peers = ["https://node2:8480/"]\n'
                                         'token_file = "repl.token"\nsync_timeout = 0.5\n'
                                         'history = "30d"\n'))
    repl = config.replication
    assert repl is not None
    assert (repl.mode, repl.peers, repl.token_file) == (
        "async", ("https://node2:8480",), tmp_path / "repl.token")
    assert (repl.sync_timeout, repl.history) == (0.5, 30 * 86400.0)
    assert load_scheduler_config(write(tmp_path, "")).replication is None
    defaults = load_scheduler_config(write(tmp_path, "[replication]\n")).replication
    assert defaults is not None
    assert (defaults.mode, defaults.sync_timeout, defaults.history) == ("sync", 2.0, 90 * 86400.0)


def test_scheduler_config_defaults(tmp_path):
    config = load_scheduler_config(write(tmp_path, ""))
    assert (config.listen_host, config.listen_port) == ("127.0.0.1", 8480)
    assert config.state_dir == Path("/var/lib/hasched")
    assert config.run_dir == Path("/run/hasched")
    assert config.jobs_dir == Path("/etc/hasched/jobs")
    assert config.log_level == "info"
    assert config.dispatch_lead == 1.0
    assert config.overload_after == 10.0
    assert config.api_tokens_file is None and config.tls is None and config.agents == {}


def test_agent_config_full_and_defaults(tmp_path):
    config = load_agent_config(write(tmp_path, """\
[agent]
name = "db1"
listen = "0.0.0.0:9481"
state_dir = "/tmp/a"
token_file = "agent.token"
output_limit = "512KiB"
kill_grace = "3s"
retention = "1d"
tls = { cert = "/c", key = "/k" }
"""))
    assert config.name == "db1"
    assert (config.listen_host, config.listen_port) == ("0.0.0.0", 9481)
    assert config.token_file == tmp_path / "agent.token"
    assert (config.output_limit, config.kill_grace, config.retention) == (512 * 1024, 3.0, 86400.0)
    assert config.tls == TLSConfig(Path("/c"), Path("/k"), None)
    minimal = load_agent_config(write(tmp_path, '[agent]\ntoken_file = "/t"\n', "b.toml"))
    assert (minimal.listen_host, minimal.listen_port) == ("127.0.0.1", 8481)
    assert minimal.state_dir == Path("/var/lib/hasched-agent")
    assert (minimal.output_limit, minimal.kill_grace, minimal.retention) == (
        10 * 1024 * 1024, 10.0, 7 * 86400.0)


@pytest.mark.parametrize("text, expected", [
    ('[scheduler]\nlisten = "x"\nport = 3\n',
     "3: scheduler.port: unknown field; expected one of: listen, state_dir, run_dir, jobs_dir, "
     "api_tokens_file, log_level, tls, calendars_file, dispatch_lead, overload_after"),
    ('[scheduler]\noverload_after = "0s"\n',
     "2: scheduler.overload_after: must be more than 0s"),
    ('[scheduler]\ndispatch_lead = "2m"\n',
     "2: scheduler.dispatch_lead: must be between 0s and 60s"),
    ('[scheduler]\ndispatch_lead = "early"\n',
     "2: scheduler.dispatch_lead: not a duration: 'early' (use e.g. 30s, 5m, 2h, 1d)"),
    ('[scheduler]\nlisten = "localhost"\n',
     "2: scheduler.listen: must be host:port, got 'localhost'"),
    ('[scheduler]\nlog_level = "loud"\n',
     "2: scheduler.log_level: must be one of: debug, info, warning, error"),
    ('[agents.db1]\nurl = "ftp://x"\ntoken_file = "t"\n',
     "2: agents.db1.url: must be an http:// or https:// URL, got 'ftp://x'"),
    ('[agents.db1]\nurl = "http://x:1"\n', "1: agents.db1: missing field 'token_file'"),
    ('\n[agents.db1]\nurl = "http://x:1"\ntoken_file = "t"\nlabels = "linux"\n',
     "5: agents.db1.labels: must be a list of strings"),
    ('[scheduler]\ntls = { cert = "c", ca = "a" }\n', "2: scheduler.tls: missing field 'key'"),
    ('[schedular]\n',
     "1: schedular: unknown field; expected one of: scheduler, agents, replication"),
    ('[replication]\nmode = "eventually"\n',
     "2: replication.mode: must be one of: sync, async, got 'eventually'"),
    ('[replication]\npeers = ["node2:8480"]\ntoken_file = "t"\n',
     "2: replication.peers: must be an http:// or https:// URL, got 'node2:8480'"),
    ('[replication]\npeers = ["http://node2:8480"]\n',
     "1: replication: missing field 'token_file' (the replication token, needed with peers)"),
    ('[replication]\nsync_timeout = "0s"\n', "2: replication.sync_timeout: must be more than 0s"),
    ('[replication]\nhistory = "5m"\n', "2: replication.history: must be at least 1h"),
    ('[replication]\nlag = 1\n', "2: replication.lag: unknown field; expected one of: mode, "
     "peers, token_file, ca, sync_timeout, history"),
    ('[scheduler]\nlisten = "127.0.0.1:80\n',
     "2: syntax: illegal character '\\n' (column 23)"),
])
def test_scheduler_config_errors_name_file_line_field(tmp_path, text, expected):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_scheduler_config(path)
    assert str(info.value) == f"{path}:{expected}"
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("text, expected", [
    ('[agent]\ntoken_file = "t"\nkill_grace = "soon"\n',
     "3: agent.kill_grace: not a duration: 'soon' (use e.g. 30s, 5m, 2h, 1d)"),
    ('[agent]\ntoken_file = "t"\noutput_limit = "lots"\n',
     "3: agent.output_limit: not a size: 'lots' (use e.g. 512KiB, 10MiB, 1GiB or bytes)"),
    ('[agent]\nname = "a"\n', "1: agent: missing field 'token_file'"),
])
def test_agent_config_errors(tmp_path, text, expected):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_agent_config(path)
    assert str(info.value) == f"{path}:{expected}"


def test_missing_file_is_one_line(tmp_path):
    path = tmp_path / "absent.toml"
    with pytest.raises(ConfigError) as info:
        load_scheduler_config(path)
    assert str(info.value) == f"{path}: cannot read: No such file or directory"


ONE, TWO = "s3cret-one-" + "1" * 22, "s3cret-two-" + "2" * 22


def token_file(tmp_path, text, name="tokens", mode=0o600):
    path = write(tmp_path, text, name)
    path.chmod(mode)
    return path


def test_tokens_skip_comments_and_blank_lines(tmp_path):
    path = token_file(tmp_path, f"# the API tokens\n\n  {ONE}  \n# old\n{TWO}\n")
    assert read_token(path) == ONE
    assert read_tokens(path) == frozenset({ONE, TWO})
    empty = token_file(tmp_path, "# nothing\n", "empty")
    with pytest.raises(ConfigError) as info:
        read_token(empty)
    assert str(info.value) == f"{empty}: token: no token in file"


def test_source_map_finds_the_line_of_each_key():
    from scheduler.tomlsrc import SourceMap

    lines = SourceMap('top = 1\n[job."a.b"]  # quoted\nnote = """\nfake = 1\n"""\n'
                      'retries = { count = 3 }\nenv.LANG = "C"\n\n[[list.item]]\nx = [\n  1,\n]\n'
                      'fake = 2\n')
    assert lines.line("top") == 1
    assert lines.line("job", "a.b") == 2 and lines.header_line("job", "a.b") == 2
    assert lines.line("job", "a.b", "fake") == 2  # line 4 is inside a string: the table line
    assert lines.line("job", "a.b", "retries", "count") == 6  # inline table: the key's line
    assert lines.line("job", "a.b", "env", "LANG") == 7
    assert lines.line("list", "item", "x") == 10
    assert lines.line("list", "item", "fake") == 13
    assert lines.line("nowhere") is None


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644, 0o660])
def test_a_token_file_others_may_read_is_refused(tmp_path, mode):
    path = token_file(tmp_path, ONE + "\n", mode=mode)
    for read in (read_token, read_tokens):
        with pytest.raises(ConfigError) as info:
            read(path)
        assert str(info.value) == (f"{path}: token file: is readable by group or others (mode "
                                   f"{mode:04o}); make it 0600 (chmod 600 {path})")


def test_a_short_token_is_refused_without_showing_it(tmp_path):
    path = token_file(tmp_path, f"# tokens\n{ONE}\nshort-token-31-characters-long!\n")
    with pytest.raises(ConfigError) as info:
        read_tokens(path)
    assert str(info.value) == (f"{path}:3: token: shorter than 32 characters (make one with: "
                               "openssl rand -hex 32)")
    assert "short-token" not in str(info.value)


def test_listen_that_is_no_ipv4_address_names_the_setting(tmp_path):
    path = write(tmp_path, '[scheduler]\nlisten = "256.1.1.1:8480"\n')
    with pytest.raises(ConfigError) as info:
        load_scheduler_config(path)
    assert str(info.value) == f"{path}:2: scheduler.listen: '256.1.1.1' is not an IPv4 address"
