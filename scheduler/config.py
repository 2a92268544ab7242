"""The scheduler's and the agent's configuration files (see docs/interfaces.md).

Relative paths in a file are taken relative to the directory holding that file, so that a
configuration and its token files can travel together.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from scheduler.logs import LOG_LEVELS
from scheduler.tomlsrc import SourceError, SourceMap, read_toml
from scheduler.units import parse_duration, parse_size


class ConfigError(SourceError):
    """A configuration mistake: str() is ``file:line: field: message``."""


@dataclass(frozen=True)
class TLSConfig:
    cert: Path
    key: Path
    ca: Path | None = None


@dataclass(frozen=True)
class AgentRef:
    name: str
    url: str
    token_file: Path
    labels: tuple[str, ...] = ()
    ca: Path | None = None


MAX_DISPATCH_LEAD = 60.0
REPLICATION_MODES = ("sync", "async")


@dataclass(frozen=True)
class ReplicationConfig:
    """[replication]: the other schedulers this one follows when standby (and serves when
    active), with a token of its own for /v1/replication/*."""

    mode: str = "sync"
    peers: tuple[str, ...] = ()
    token_file: Path | None = None
    ca: Path | None = None
    sync_timeout: float = 2.0  # seconds a sync write waits for the follower, then goes on alone
    history: float = 90 * 86400.0  # run history kept on the active (pruning replicates)


@dataclass(frozen=True)
class SchedulerConfig:
    path: Path
    listen_host: str = "127.0.0.1"
    listen_port: int = 8480
    state_dir: Path = Path("/var/lib/hasched")
    run_dir: Path = Path("/run/hasched")
    jobs_dir: Path = Path("/etc/hasched/jobs")
    api_tokens_file: Path | None = None
    log_level: str = "info"
    tls: TLSConfig | None = None
    calendars_file: Path | None = None
    dispatch_lead: float = 1.0  # seconds: planned fires go to agents this early (0: off)
    overload_after: float = 10.0  # seconds behind its fires from which /health says overloaded
    agents: dict[str, AgentRef] = field(default_factory=dict)
    replication: ReplicationConfig | None = None  # None: no [replication] table (mode "off")


@dataclass(frozen=True)
class AgentConfig:
    path: Path
    name: str
    listen_host: str = "127.0.0.1"
    listen_port: int = 8481
    state_dir: Path = Path("/var/lib/hasched-agent")
    token_file: Path | None = None
    output_limit: int = 10 * 1024 * 1024
    kill_grace: float = 10.0
    retention: float = 7 * 86400.0
    tls: TLSConfig | None = None
    # The account of jobs that name none; None: "nobody" when the agent runs as root, else the
    # agent's own account (which then needs allow_agent_account).
    default_user: str | None = None
    allow_agent_account: bool = False  # may jobs run as the agent's account (can read its token)
    cgroups: bool = True  # false: runs are killed by process group only (see agent/cgroup.py)


class _Reader:
    """Typed access to one table of a parsed file, raising ConfigError with the key's line."""

    def __init__(self, path: Path, lines: SourceMap, table: tuple[str, ...], data: Any) -> None:
        self.path, self.lines, self.table = path, lines, table
        if not isinstance(data, dict):
            self.fail((), "must be a table")
        self.data = data

    def fail(self, key: tuple[str, ...], message: str) -> None:
        path = self.table + key
        raise ConfigError(self.path, self.lines.line(*path), ".".join(path), message)

    def only(self, allowed: tuple[str, ...]) -> None:
        for key in self.data:
            if key not in allowed:
                self.fail((key,), f"unknown field; expected one of: {', '.join(allowed)}")

    def string(self, key: str, default: str | None = None, required: bool = False) -> str | None:
        value = self.data.get(key, default)
        if value is None and required:
            self.fail((), f"missing field '{key}'")
        if value is not None and (not isinstance(value, str) or not value.strip()):
            self.fail((key,), "must be a non-empty string")
        return value

    def path_of(self, key: str, default: Path | None = None, required: bool = False) -> Path | None:
        value = self.string(key, None, required)
        if value is None:
            return default
        if Path(value).is_absolute():
            return Path(value)
        return (self.path.parent / value).resolve()

    def boolean(self, key: str, default: bool) -> bool:
        value = self.data.get(key, default)
        if not isinstance(value, bool):
            self.fail((key,), "must be true or false")
        return value

    def listen(self, default_port: int) -> tuple[str, int]:
        value = self.string("listen", f"127.0.0.1:{default_port}")
        host, sep, port = value.rpartition(":")
        host = host.strip("[]")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            self.fail(("listen",), f"must be host:port, got {value!r}")
        if all(c.isdigit() or c == "." for c in host):  # meant as an IPv4 address
            try:
                ipaddress.IPv4Address(host)
            except ValueError:
                self.fail(("listen",), f"{host!r} is not an IPv4 address")
        return host, int(port)

    def convert(self, key: str, parse: Any, default: Any) -> Any:
        if key not in self.data:
            return default
        try:
            return parse(self.data[key])
        except ValueError as exc:
            self.fail((key,), str(exc))

    def tls(self, key: str = "tls") -> TLSConfig | None:
        if key not in self.data:
            return None
        table = _Reader(self.path, self.lines, self.table + (key,), self.data[key])
        table.only(("cert", "key", "ca"))
        return TLSConfig(
            cert=table.path_of("cert", required=True),
            key=table.path_of("key", required=True),
            ca=table.path_of("ca"),
        )


def _check_tables(path: Path, lines: SourceMap, data: dict, allowed: tuple[str, ...]) -> None:
    for key in data:
        if key not in allowed:
            raise ConfigError(path, lines.line(key), key,
                              f"unknown field; expected one of: {', '.join(allowed)}")


def load_scheduler_config(path: str | Path) -> SchedulerConfig:
    """Read scheduler.toml; every mistake raises ConfigError naming file, line and field."""
    path = Path(path)
    data, lines = read_toml(path, ConfigError)
    _check_tables(path, lines, data, ("scheduler", "agents", "replication"))
    main = _Reader(path, lines, ("scheduler",), data.get("scheduler", {}))
    main.only(("listen", "state_dir", "run_dir", "jobs_dir", "api_tokens_file", "log_level",
               "tls", "calendars_file", "dispatch_lead", "overload_after"))
    host, port = main.listen(8480)
    lead = main.convert("dispatch_lead", parse_duration, 1.0)
    if not 0 <= lead <= MAX_DISPATCH_LEAD:
        main.fail(("dispatch_lead",), f"must be between 0s and {MAX_DISPATCH_LEAD:g}s")
    overload_after = main.convert("overload_after", parse_duration, 10.0)
    if overload_after <= 0:
        main.fail(("overload_after",), "must be more than 0s")
    level = main.string("log_level", "info")
    if level not in LOG_LEVELS:
        main.fail(("log_level",), f"must be one of: {', '.join(LOG_LEVELS)}")
    agents: dict[str, AgentRef] = {}
    all_agents = _Reader(path, lines, ("agents",), data.get("agents", {}))
    for name, table in all_agents.data.items():
        agent = _Reader(path, lines, ("agents", name), table)
        agent.only(("url", "token_file", "labels", "ca"))
        url = agent.string("url", required=True)
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            agent.fail(("url",), f"must be an http:// or https:// URL, got {url!r}")
        labels = agent.data.get("labels", [])
        if not isinstance(labels, list) or not all(isinstance(x, str) and x for x in labels):
            agent.fail(("labels",), "must be a list of strings")
        agents[name] = AgentRef(name=name, url=url.rstrip("/"),
                                token_file=agent.path_of("token_file", required=True),
                                labels=tuple(labels), ca=agent.path_of("ca"))
    replication = (_replication(_Reader(path, lines, ("replication",), data["replication"]))
                   if "replication" in data else None)
    return SchedulerConfig(
        path=path,
        replication=replication,
        listen_host=host,
        listen_port=port,
        state_dir=main.path_of("state_dir", Path("/var/lib/hasched")),
        run_dir=main.path_of("run_dir", Path("/run/hasched")),
        jobs_dir=main.path_of("jobs_dir", Path("/etc/hasched/jobs")),
        api_tokens_file=main.path_of("api_tokens_file"),
        log_level=level,
        tls=main.tls(),
        calendars_file=main.path_of("calendars_file"),
        dispatch_lead=float(lead),
        overload_after=float(overload_after),
        agents=agents,
    )


def _url(table: _Reader, key: tuple[str, ...], url: Any) -> str:
    parts = urlsplit(url) if isinstance(url, str) else None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        table.fail(key, f"must be an http:// or https:// URL, got {url!r}")
    return str(url).rstrip("/")


def _replication(table: _Reader) -> ReplicationConfig:
    table.only(("mode", "peers", "token_file", "ca", "sync_timeout", "history"))
    mode = table.string("mode", "sync")
    if mode not in REPLICATION_MODES:
        table.fail(("mode",), f"must be one of: {', '.join(REPLICATION_MODES)}, got {mode!r}")
    peers = table.data.get("peers", [])
    if not isinstance(peers, list):
        table.fail(("peers",), "must be a list of URLs")
    urls = tuple(_url(table, ("peers",), p) for p in peers)
    token_file = table.path_of("token_file")
    if urls and token_file is None:
        table.fail((), "missing field 'token_file' (the replication token, needed with peers)")
    timeout = table.convert("sync_timeout", parse_duration, 2.0)
    if timeout <= 0:
        table.fail(("sync_timeout",), "must be more than 0s")
    history = table.convert("history", parse_duration, 90 * 86400.0)
    if history < 3600:
        table.fail(("history",), "must be at least 1h")
    return ReplicationConfig(mode=mode, peers=urls, token_file=token_file, ca=table.path_of("ca"),
                             sync_timeout=float(timeout), history=float(history))


def load_agent_config(path: str | Path) -> AgentConfig:
    """Read agent.toml; every mistake raises ConfigError naming file, line and field."""
    path = Path(path)
    data, lines = read_toml(path, ConfigError)
    _check_tables(path, lines, data, ("agent",))
    main = _Reader(path, lines, ("agent",), data.get("agent", {}))
    main.only(("name", "listen", "state_dir", "token_file", "output_limit", "kill_grace",
               "retention", "tls", "default_user", "allow_agent_account", "cgroups"))
    host, port = main.listen(8481)
    return AgentConfig(
        path=path,
        name=main.string("name", socket.gethostname().split(".")[0]),
        listen_host=host,
        listen_port=port,
        state_dir=main.path_of("state_dir", Path("/var/lib/hasched-agent")),
        token_file=main.path_of("token_file", required=True),
        output_limit=main.convert("output_limit", parse_size, 10 * 1024 * 1024),
        kill_grace=main.convert("kill_grace", parse_duration, 10.0),
        retention=main.convert("retention", parse_duration, 7 * 86400.0),
        tls=main.tls(),
        default_user=main.string("default_user"),
        allow_agent_account=main.boolean("allow_agent_account", False),
        cgroups=main.boolean("cgroups", True),
    )


MIN_TOKEN_LENGTH = 32


def token_file_lines(path: str | Path) -> list[tuple[int, str]]:
    """(line number, stripped line) of a token file's non-comment lines, refused when others
    may read the file: a token anyone on the machine can read keeps nobody out."""
    try:
        with open(path, "rb") as f:
            mode = stat.S_IMODE(os.fstat(f.fileno()).st_mode)
            data = f.read(1 << 20)
    except OSError as exc:
        raise ConfigError(path, None, "cannot read", exc.strerror or str(exc)) from None
    if mode & 0o077:
        raise ConfigError(path, None, "token file", f"is readable by group or others (mode "
                          f"{mode:04o}); make it 0600 (chmod 600 {path})")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(path, None, "cannot read", "not UTF-8 text") from None
    lines = [(number, line.strip()) for number, line in enumerate(text.splitlines(), start=1)]
    lines = [(number, line) for number, line in lines if line and not line.startswith("#")]
    if not lines:
        raise ConfigError(path, None, "token", "no token in file")
    return lines


def check_token_length(path: str | Path, number: int, token: str) -> str:
    """The token, refused when it is short enough to guess (the token itself is never shown)."""
    if len(token) < MIN_TOKEN_LENGTH:
        raise ConfigError(path, number, "token", f"shorter than {MIN_TOKEN_LENGTH} "
                          "characters (make one with: openssl rand -hex 32)")
    return token


def _token_lines(path: str | Path) -> list[str]:
    """The tokens of a file of one token per line, each long enough not to be guessed."""
    return [check_token_length(path, number, line) for number, line in token_file_lines(path)]


def read_token(path: str | Path) -> str:
    """The first non-comment line of a token file, stripped."""
    return _token_lines(path)[0]


def read_tokens(path: str | Path) -> frozenset[str]:
    """Every non-comment line of a token file (one bearer token per line)."""
    return frozenset(_token_lines(path))
