"""How a run's command is started: its account, environment, PATH search and process.

The supervisor (supervise.py) calls these once per run, in a process forked from the launcher,
so they are written to touch as little memory as they can.

Not `subprocess`: it imports `threading`, whose at-fork hook alone made every fork of the
launcher touch (and so copy) some 130 more pages; a run's supervisor starts its job with
posix_spawn instead (vfork and exec, no Python in between). Imported only to run a job as
another user, which posix_spawn cannot do. Paths are plain strings for the same reason:
pathlib made a forked supervisor copy some 150 more pages than os.path does.
"""

from __future__ import annotations

import errno
import os
import pwd
import signal
from typing import Any

SAFE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def job_env(spec: dict[str, Any], account: pwd.struct_passwd) -> dict[str, str]:
    """A minimal, predictable environment; the order's env goes over it."""
    env = {
        "PATH": SAFE_PATH,
        "LANG": "C.UTF-8",
        "HOME": account.pw_dir,
        "USER": account.pw_name,
        "LOGNAME": account.pw_name,
        "SHELL": account.pw_shell or "/bin/sh",
        "HASCHED_RUN_ID": spec["run_id"],
        "HASCHED_JOB": spec["job"],
        "HASCHED_ATTEMPT": str(spec["attempt"]),
    }
    env.update(spec.get("env") or {})
    return env


_kept: list[Any] = []


def find_executable(name: str, env: dict[str, str]) -> str:
    """The file to execute for argv[0], searched in the job's PATH as execvpe would (Popen
    does the same). Raises OSError as exec would: ENOENT, or EACCES when only files that
    cannot be executed were found."""
    if "/" in name:
        return name
    denied = False
    # Not os.get_exec_path: its warnings.catch_warnings() alone costs a forked child dozens of
    # copied pages. Most directories fail os.access, a bare system call, and are not stat'ed.
    for d in env.get("PATH", os.defpath).split(os.pathsep):
        path = os.path.join(d or ".", name)
        if os.access(path, os.X_OK) and os.path.isfile(path):
            return path
        denied = denied or os.access(path, os.F_OK)
    if denied:
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), name)
    raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), name)


def start_job(command: list[str], cwd: str, env: dict[str, str],
              account: pwd.struct_passwd, group: Any) -> tuple[int, int, int]:
    """(pid, stdout fd, stderr fd) of the job, started in a session of its own with stdin from
    /dev/null, inside the run's `group` (a cgroup.ProcessGroup: the supervisor enters it for
    the start, so that the job is born there, and leaves it). Raises OSError when it cannot be
    started (cwd, executable, cgroup)."""
    other = account.pw_uid != os.getuid()
    if group.wraps_account:  # a systemd scope: systemd-run switches to the account itself
        command = group.command(command, (account.pw_uid, account.pw_gid) if other else None)
        other = False
    else:
        command = group.command(command, None)
    group.enter()
    try:
        return _start(command, cwd, env, account, other)
    finally:
        group.leave()


def _start(command: list[str], cwd: str, env: dict[str, str], account: pwd.struct_passwd,
           other: bool) -> tuple[int, int, int]:
    if other:
        import subprocess  # noqa: PLC0415 - see the module's docstring

        child = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            cwd=cwd, env=env, start_new_session=True, user=account.pw_uid,
            group=account.pw_gid, extra_groups=os.getgrouplist(account.pw_name, account.pw_gid))
        assert child.stdout is not None and child.stderr is not None
        fds = os.dup(child.stdout.fileno()), os.dup(child.stderr.fileno())
        child.stdout.close()
        child.stderr.close()
        _kept.append(child)  # never collected: its __del__ could reap the job behind our back
        return child.pid, *fds
    # posix_spawn has no chdir action: the supervisor moves there itself (it uses absolute
    # paths only). Every fd it holds beyond 0-2 is close-on-exec (see supervise()). One
    # difference with Popen: glibc's posix_spawn leaves its two internal signals (32 and 33)
    # ignored in the job, as in any program it spawns.
    os.chdir(cwd)
    executable = find_executable(command[0], env)
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    try:
        pid = os.posix_spawn(
            executable, command, env, setsid=True, setsigmask=(),
            # Python ignores SIGPIPE and SIGXFSZ; an ignored signal would stay so in the job.
            setsigdef=(signal.SIGPIPE, signal.SIGXFSZ),
            file_actions=[(os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
                          (os.POSIX_SPAWN_DUP2, out_w, 1), (os.POSIX_SPAWN_DUP2, err_w, 2)])
    except BaseException:
        os.close(out_r)
        os.close(err_r)
        raise
    finally:
        os.close(out_w)
        os.close(err_w)
    return pid, out_r, err_r


def default_cwd(account: pwd.struct_passwd) -> str:
    # Service accounts often have a home that does not exist (nobody: /nonexistent).
    return account.pw_dir if account.pw_dir and os.path.isdir(account.pw_dir) else "/"


launcher_account: pwd.struct_passwd | None = None  # looked up once by the launcher


def resolve_user(spec: dict[str, Any]) -> tuple[pwd.struct_passwd, str | None]:
    """(account to run the order as, error or None): the order's user, else the agent's
    default_user. The agent's own account only where its configuration allows it
    (allow_agent_account): a job running as the agent could read the agent's token."""
    me = launcher_account or pwd.getpwuid(os.getuid())
    name = spec.get("user") or spec.get("default_user") or me.pw_name
    try:
        account = pwd.getpwnam(name)
    except KeyError:
        return me, f"unknown user {name!r}"
    if account.pw_uid == me.pw_uid and not spec.get("allow_agent_account"):
        return me, (f"cannot run as user {name!r}: it is the agent's own account "
                    f"(allow_agent_account is not set in the agent's configuration)")
    if account.pw_uid != os.getuid() and os.geteuid() != 0:
        return me, f"cannot run as user {name!r}: the agent is not running as root"
    return account, None
