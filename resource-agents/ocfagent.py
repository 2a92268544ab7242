"""OCF 1.1 plumbing for Python resource agents: exit codes, parameters, meta-data, logging.

A second agent can reuse this module as is. It is imported on every monitor (every few seconds
per resource), so it imports only `os` and `sys` at load time; everything else is imported by
the function that needs it.
"""

from __future__ import annotations

import os
import sys

# Exit codes (OCF 1.1 and Pacemaker's extensions).
SUCCESS = 0
ERR_GENERIC = 1
ERR_ARGS = 2
ERR_UNIMPLEMENTED = 3
ERR_PERM = 4
NOT_INSTALLED = 5
NOT_CONFIGURED = 6
NOT_RUNNING = 7
RUNNING_PROMOTED = 8
FAILED_PROMOTED = 9

_FALSE_WORDS = ("", "0", "no", "n", "false", "off")


def is_true(value: str | None) -> bool:
    """ocf_is_true: Pacemaker passes booleans as strings ("true", "yes", "1", ...)."""
    return (value or "").strip().lower() in ("1", "yes", "y", "true", "on")


def env(name: str, default: str = "") -> str:
    """An OCF_RESKEY_* value; empty or unset gives `default`."""
    return os.environ.get("OCF_RESKEY_" + name) or default


def meta(name: str, default: str = "") -> str:
    """An OCF_RESKEY_CRM_meta_* value (absent when pcs or an admin runs the agent by hand)."""
    return os.environ.get("OCF_RESKEY_CRM_meta_" + name) or default


def instance() -> str:
    return os.environ.get("OCF_RESOURCE_INSTANCE") or "default"


def resource_name() -> str:
    """The instance without a clone suffix: "jobs:1" -> "jobs" (shared by every clone instance)."""
    return instance().split(":", 1)[0]


def is_probe() -> bool:
    """A monitor with interval 0 (or none at all) is a probe: it reports state, never errors."""
    return meta("interval", "0") == "0"


def is_promotable() -> bool:
    """Part of a promotable clone? Pacemaker 2.1 passes promoted_max/master_max, not always
    promotable (same test as ocf-shellfuncs' ocf_is_ms)."""
    if is_true(meta("promotable")):
        return True
    for key in ("promoted_max", "master_max"):
        try:
            if int(meta(key, "0")) > 0:
                return True
        except ValueError:
            pass
    return False


def action_timeout(default: float) -> float:
    """The action's budget in seconds (CRM_meta_timeout is in milliseconds)."""
    raw = meta("timeout")
    try:
        return int(raw) / 1000.0 if raw else default
    except ValueError:
        return default


def check_level(supported: tuple[int, ...]) -> int:
    """OCF_CHECK_LEVEL, falling back to the next lower level this agent supports."""
    try:
        wanted = int(os.environ.get("OCF_CHECK_LEVEL") or 0)
    except ValueError:
        wanted = 0
    return max((lvl for lvl in supported if lvl <= wanted), default=0)


def run_command(argv: list[str], timeout: float) -> tuple[int, str]:
    """(exit status, output) of a helper command (crm_attribute, hasched ctl, ...): stdout
    when it succeeded, else its last line of output; 127 when it cannot run at all."""
    import subprocess

    try:
        done = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                              timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as e:
        return 127, f"{argv[0]}: {e}"
    if done.returncode == 0:
        return 0, done.stdout.strip()
    lines = (done.stdout + done.stderr).strip().splitlines()
    return done.returncode, (lines[-1] if lines else "")


# -- process identity ----------------------------------------------------------------------------


class Proc:
    """A process as /proc shows it. `started` is its start time in clock ticks since boot
    (field 22 of /proc/PID/stat): with the PID it names one process for the life of the system,
    so a PID reused by another process never matches. Read without psutil: importing psutil
    costs more than a whole interpreter start, and monitor runs every few seconds."""

    __slots__ = ("pid", "started", "state", "cmdline")

    def __init__(self, pid: int, started: int, state: str, cmdline: list[str]) -> None:
        self.pid, self.started, self.state, self.cmdline = pid, started, state, cmdline

    @classmethod
    def read(cls, pid: int) -> Proc | None:
        """The process `pid`, or None when there is none (zombies are reported, state "Z")."""
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                stat = f.read()
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                raw = f.read()
        except (OSError, ValueError):
            return None
        # The command name (field 2) may contain spaces and parentheses: split after the last ")".
        fields = stat[stat.rfind(b")") + 2:].split()
        cmdline = [a.decode(errors="replace") for a in raw.split(b"\0")[:-1]]
        return cls(pid, int(fields[19]), fields[0].decode(), cmdline)

    def alive(self) -> bool:
        """Still this very process (same PID and start time), and not a zombie."""
        now = Proc.read(self.pid)
        return now is not None and now.started == self.started and now.state != "Z"


# -- logging -----------------------------------------------------------------------------------

_SYSLOG_LEVELS = {"debug": 7, "info": 6, "warning": 4, "err": 3}


def _debug_enabled() -> bool:
    # HA_debug is a string; "0" means off (resource-agents' ocf.py compares it with int 0).
    return os.environ.get("HA_debug", "0").strip().lower() not in _FALSE_WORDS


def log(level: str, message: str) -> None:
    """Log like ocf_log: syslog via HA_LOGFACILITY, plus HA_LOGFILE (HA_DEBUGLOG for debug).

    `level` is one of debug, info, warning, err. Never raises: logging must not fail an action.
    """
    if level == "debug" and not _debug_enabled():
        return
    tag = f"{os.environ.get('OCF_RESOURCE_TYPE', os.path.basename(sys.argv[0]))}({instance()})"
    message = " ".join(message.split("\n"))
    facility = os.environ.get("HA_LOGFACILITY", "")
    if facility and facility.lower() != "none":
        try:
            import syslog

            fac = getattr(syslog, "LOG_" + facility.upper(), syslog.LOG_DAEMON)
            syslog.openlog(tag, syslog.LOG_PID, fac)
            syslog.syslog(_SYSLOG_LEVELS.get(level, 6), f"{level.upper()}: {message}")
        except (OSError, ValueError):
            pass
    path = os.environ.get("HA_DEBUGLOG" if level == "debug" else "HA_LOGFILE", "")
    if path:
        import time

        stamp = time.strftime("%b %d %H:%M:%S")
        try:
            with open(path, "a", encoding="utf-8") as f:
                f.write(f"{tag}[{os.getpid()}]:\t{stamp} {level.upper()}: {message}\n")
        except OSError:
            pass
    if not facility and not path and level != "debug":
        # Run by hand: say it on stderr so the admin sees it.
        print(f"{level.upper()}: {message}", file=sys.stderr)


def fail(code: int, reason: str) -> int:
    """Log `reason`, emit it as the one-line exit reason Pacemaker shows, return `code`."""
    reason = " ".join(reason.split())
    log("err", reason)
    print(f"ocf-exit-reason:{reason}", file=sys.stderr, flush=True)
    return code


# -- meta-data ---------------------------------------------------------------------------------


class Parameter:
    """One <parameter> of the meta-data. `default` is what the agent really uses when unset."""

    __slots__ = ("name", "shortdesc", "longdesc", "type", "default", "required", "reloadable",
                 "options")

    def __init__(self, name: str, shortdesc: str, longdesc: str, *, type: str = "string",  # noqa: PLR0913 - keyword-only, one per attribute of an OCF <parameter>
                 default: str = "", required: bool = False, reloadable: bool = False,
                 options: tuple[str, ...] = ()) -> None:
        self.name, self.shortdesc, self.longdesc = name, shortdesc, longdesc
        self.type, self.default, self.required = type, default, required
        self.reloadable, self.options = reloadable, options


class Action:
    """One <action> of the meta-data; timeouts and intervals carry units ("20s")."""

    __slots__ = ("name", "timeout", "interval", "depth", "role")

    def __init__(self, name: str, timeout: str, *, interval: str = "", depth: str = "",
                 role: str = "") -> None:
        self.name, self.timeout, self.interval = name, timeout, interval
        self.depth, self.role = depth, role


def escape(text: str) -> str:
    """XML text escaping (xml.sax.saxutils would cost an import chain of its own)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def quoteattr(text: str) -> str:
    return '"' + escape(text).replace('"', "&quot;") + '"'


def render_metadata(name: str, version: str, shortdesc: str, longdesc: str,
                    parameters: list[Parameter], actions: list[Action]) -> str:
    """OCF 1.1 meta-data XML; every text and attribute is escaped."""
    out = ['<?xml version="1.0"?>',
           '<!DOCTYPE resource-agent SYSTEM "ra-api-1.dtd">',
           f"<resource-agent name={quoteattr(name)} version={quoteattr(version)}>",
           "<version>1.1</version>",
           f'<longdesc lang="en">{escape(longdesc)}</longdesc>',
           f'<shortdesc lang="en">{escape(shortdesc)}</shortdesc>',
           "<parameters>"]
    for p in parameters:
        flags = f' required="{int(p.required)}"'
        if p.reloadable:
            flags += ' reloadable="1"'
        out.append(f"<parameter name={quoteattr(p.name)}{flags}>")
        out.append(f'<longdesc lang="en">{escape(p.longdesc)}</longdesc>')
        out.append(f'<shortdesc lang="en">{escape(p.shortdesc)}</shortdesc>')
        default = f" default={quoteattr(p.default)}" if p.default else ""
        if p.options:
            out.append(f'<content type="select"{default}>')
            out.extend(f"<option value={quoteattr(o)} />" for o in p.options)
            out.append("</content>")
        else:
            out.append(f"<content type={quoteattr(p.type)}{default} />")
        out.append("</parameter>")
    out.append("</parameters>")
    out.append("<actions>")
    for a in actions:
        attrs = f"name={quoteattr(a.name)} timeout={quoteattr(a.timeout)}"
        for key in ("interval", "depth", "role"):
            if getattr(a, key):
                attrs += f" {key}={quoteattr(getattr(a, key))}"
        out.append(f"<action {attrs} />")
    out.append("</actions>")
    out.append("</resource-agent>")
    return "\n".join(out) + "\n"


def dispatch(actions: dict, argv: list[str]) -> int:
    """Run the action named in argv[1]; an unknown action is ERR_UNIMPLEMENTED (3)."""
    if len(argv) != 2:
        print(f"usage: {os.path.basename(argv[0])} {{{'|'.join(actions)}}}", file=sys.stderr)
        return ERR_ARGS
    handler = actions.get(argv[1])
    if handler is None:
        return fail(ERR_UNIMPLEMENTED, f"action {argv[1]!r} is not implemented")
    return handler()
