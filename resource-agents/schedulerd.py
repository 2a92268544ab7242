"""The hasched scheduler daemon as ocf:hasched:scheduler sees it: its parameters (each default
declared once), its PID file and process identity, its control socket and `hasched ctl`.

Installed beside the agent with ocfagent.py and promotion.py. Standard library only, and like
ocfagent.py (imported on every monitor) it imports at load time no standard module but os and
sys: every other one is imported by the function that needs it.
"""

from __future__ import annotations

import os
import sys

import ocfagent as ocf

LOG_LEVELS = ("debug", "info", "warning", "error")


def default_hasched() -> str:
    """The `hasched` installed beside this agent's interpreter, else the one on PATH."""
    beside = os.path.join(os.path.dirname(sys.executable), "hasched")
    return beside if os.access(beside, os.X_OK) else "hasched"


def parameters() -> list[ocf.Parameter]:
    P = ocf.Parameter
    return [
        P("config", "Path to scheduler.toml",
          "Absolute path of the scheduler's configuration file (TOML). Required to start.",
          required=True),
        P("hasched", "hasched executable",
          "The hasched command. Default: the hasched installed beside the agent's Python "
          "interpreter, else hasched on PATH.", default=default_hasched()),
        P("user", "User to run the daemon as",
          "The daemon runs as this user (and its primary group).", default="root"),
        P("pidfile", "PID file",
          "Where the agent records the daemon's PID and start time. "
          "Default: /run/hasched/<resource>.pid."),
        P("socket", "Control socket",
          "Path of the daemon's control socket. Default: <run_dir>/control.sock, with run_dir "
          "read from the configuration file (/run/hasched when it sets none)."),
        P("log_level", "Log level",
          "The daemon's log level; changing it needs no restart. Default: the configuration "
          "file's log_level.", options=LOG_LEVELS, reloadable=True),
        P("log_file", "Daemon log file",
          "File the daemon's standard output and error are appended to.",
          default="/var/log/hasched/scheduler.log"),
        P("epoch_attribute", "CIB attribute holding the epoch",
          "Cluster property (crm_config) holding the cluster-wide epoch that promote "
          "increments. Default: hasched-epoch-<resource>."),
    ]


# -- parameters as the actions use them --------------------------------------------------------

def param(name: str) -> str:
    """OCF_RESKEY_<name>, else the default that parameters() declares (the one declaration:
    the meta-data shows it and the actions use it). Defaults that depend on the resource name
    or the config file are computed by the function named after the parameter."""
    return ocf.env(name, next(p.default for p in parameters() if p.name == name))


def pidfile() -> str:
    return ocf.env("pidfile", f"/run/hasched/{ocf.resource_name()}.pid")


def read_config() -> dict:
    """The configuration file as a dict; raises OSError or ValueError (tomllib's errors)."""
    import tomllib

    with open(ocf.env("config"), "rb") as f:
        return tomllib.load(f)


def socket_path() -> str:
    if ocf.env("socket"):
        return ocf.env("socket")
    try:
        run_dir = read_config().get("scheduler", {}).get("run_dir") or "/run/hasched"
    except (OSError, ValueError, AttributeError):
        run_dir = "/run/hasched"
    return os.path.join(str(run_dir), "control.sock")


def epoch_attribute() -> str:
    return ocf.env("epoch_attribute", f"hasched-epoch-{ocf.resource_name()}")


def defer_file() -> str:
    """Where a refused promotion remembers the fresher node it deferred to (promotion.py)."""
    return f"{pidfile()}.defer"


# -- the daemon: identity, control socket, commands --------------------------------------------

def daemon_process() -> ocf.Proc | None:
    """Our daemon, or None. The PID file holds the PID and its start time; a stale PID file, a
    PID now used by another process, a zombie or a command line that is not a `scheduler run`
    of our config all mean "not running"."""
    try:
        with open(pidfile()) as f:
            pid_text, started_text = f.read().split()[:2]
        proc = ocf.Proc.read(int(pid_text))
    except (OSError, ValueError):
        return None
    if proc is None or proc.started != int(started_text) or proc.state == "Z":
        return None
    return proc if is_our_command(proc.cmdline) else None


def is_our_command(cmdline: list[str]) -> bool:
    if "scheduler" not in cmdline or "run" not in cmdline:
        return False
    config = ocf.env("config")
    return not config or ("--config" in cmdline and config in cmdline)


def ask(request: dict, timeout: float = 5.0) -> dict:
    """One JSON line to the control socket, one back. Raises OSError or ValueError."""
    import json
    import socket

    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(socket_path())
        s.sendall(json.dumps(request).encode() + b"\n")
        answer = b""
        while not answer.endswith(b"\n"):
            chunk = s.recv(65536)
            if not chunk:
                break
            answer += chunk
    reply = json.loads(answer)
    if not isinstance(reply, dict):
        raise ValueError(f"control socket answered {answer[:200]!r}")
    return reply


def ctl(*args: str) -> tuple[int, str]:
    return ocf.run_command([param("hasched"), "ctl", "--socket", socket_path(), *args],
                           ocf.action_timeout(20) * 0.8)


def wait_gone(procs: list, deadline: float) -> bool:
    import time

    while any(p.alive() for p in procs):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.1)
    return True


def last_log_line() -> str:
    try:
        with open(param("log_file"), "rb") as f:
            f.seek(max(0, os.path.getsize(f.name) - 4096))
            lines = f.read().decode(errors="replace").strip().splitlines()
        return lines[-1] if lines else ""
    except OSError:
        return ""


def spawn(argv: list[str], log_file: str):
    """Run the daemon in its own session (Pacemaker kills the agent's process group on
    timeout), stdin /dev/null, output appended to `log_file`, as the `user` parameter, without
    the OCF environment; record it in the PID file. Returns the Popen; raises OSError."""
    import pwd
    import subprocess

    user = pwd.getpwnam(param("user"))
    os.makedirs(os.path.dirname(pidfile()), mode=0o755, exist_ok=True)
    os.makedirs(os.path.dirname(log_file), mode=0o755, exist_ok=True)
    with open(log_file, "ab") as log:
        proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True,
            cwd="/", env={k: v for k, v in os.environ.items()
                          if not k.startswith(("OCF_", "HA_"))},
            **({} if user.pw_uid == os.getuid() else
               {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}))
    started = ocf.Proc.read(proc.pid)
    if started is None:
        raise OSError(f"pid {proc.pid} vanished at once")
    write_pidfile(proc.pid, started.started)
    return proc


def await_answer(proc, deadline: float, log_file: str) -> tuple[dict | None, str]:
    """(status, "") once the daemon just spawned answers `status`; (None, why) when it exits
    first or `deadline` (time.monotonic()) passes, and then it is killed and the PID file gone."""
    import time

    while True:
        code = proc.poll()
        if code is not None:
            remove(pidfile())
            return None, f"daemon exited with status {code} during start: {last_log_line()}"
        try:
            if (status := ask({"op": "status"}, timeout=2)).get("ok"):
                return status, ""
        except (OSError, ValueError):
            pass
        if time.monotonic() >= deadline:
            kill_session(proc.pid)
            remove(pidfile())
            return None, (f"daemon pid {proc.pid} did not answer on {socket_path()} in time; "
                          f"killed it; see {log_file}")
        time.sleep(0.2)


def write_pidfile(pid: int, started: int) -> None:
    tmp = f"{pidfile()}.tmp"
    with open(tmp, "w") as f:
        f.write(f"{pid}\n{started}\n")
    os.replace(tmp, pidfile())


def remove(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def kill_session(pid: int) -> None:
    import signal

    for kill in (os.killpg, os.kill):
        try:
            kill(pid, signal.SIGKILL)
        except OSError:
            pass


def orphans() -> list[ocf.Proc]:
    """Daemons running our config whose PID file is gone (only with config set)."""
    if not ocf.env("config"):
        return []
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != os.getpid():
            proc = ocf.Proc.read(int(entry))
            if proc is not None and proc.state != "Z" and is_our_command(proc.cmdline):
                found.append(proc)
    return found
