"""How a run's command is started: its account, environment, PATH search and process.

The supervisor (supervise.py) calls these once per run, in a process forked from the launcher,
so they are written to touch as little memory as they can.

Not `subprocess`: it imports `threading`, whose at-fork hook alone made every fork of the
launcher touch (and so copy) some 130 more pages; a run's supervisor starts its job with
posix_spawn instead (vfork and exec, no Python in between). A job of another account (nobody,
by default under a root agent), which posix_spawn cannot switch to, is started by a plain
os.fork that switches and execs (_start_as): importing subprocess for it, in every forked
supervisor, cost some 8 ms per run, most of a run's start (bench/lateness.py). Paths are plain
strings for the same reason: pathlib made a forked supervisor copy some 150 more pages than
os.path does.
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
        return _start_as(command, cwd, env, account)
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


def _start_as(command: list[str], cwd: str, env: dict[str, str],
              account: pwd.struct_passwd) -> tuple[int, int, int]:
    """The job as another account: fork; in the child, its own session, stdin from /dev/null,
    the account's groups, gid and uid (root's setuid sets the saved uid too: no way back), its
    cwd and PATH search as that account, exec. What Popen(user=, group=, extra_groups=, cwd=,
    start_new_session=True) does, without importing subprocess into every supervisor. An error
    before the exec comes back through a close-on-exec pipe and is raised here, as Popen
    would: with the cwd as its filename when the account cannot enter it."""
    groups = os.getgrouplist(account.pw_name, account.pw_gid)
    out_r, out_w = os.pipe()  # os.pipe's ends are close-on-exec; dup2's copies are not
    err_r, err_w = os.pipe()
    st_r, st_w = os.pipe()
    try:
        pid = os.fork()
    except BaseException:
        for fd in (out_r, out_w, err_r, err_w, st_r, st_w):
            os.close(fd)
        raise
    if pid == 0:  # the child: os calls only until the exec, which replaces it
        stage = ""
        try:
            os.setsid()
            null = os.open(os.devnull, os.O_RDONLY)
            os.dup2(null, 0)
            os.dup2(out_w, 1)
            os.dup2(err_w, 2)
            # As posix_spawn's setsigmask/setsigdef: Python ignores SIGPIPE and SIGXFSZ, and
            # the supervisor's own handlers are reset by the exec.
            signal.pthread_sigmask(signal.SIG_SETMASK, ())
            signal.signal(signal.SIGPIPE, signal.SIG_DFL)
            signal.signal(signal.SIGXFSZ, signal.SIG_DFL)
            os.setgroups(groups)
            os.setgid(account.pw_gid)
            os.setuid(account.pw_uid)
            stage = "cwd"
            os.chdir(cwd)
            stage = ""
            os.execve(find_executable(command[0], env), command, env)
        except OSError as e:
            os.write(st_w, f"{e.errno or 0}:{stage}".encode())
        finally:
            os._exit(127)
    for fd in (out_w, err_w, st_w):
        os.close(fd)
    try:
        failure = b""
        while chunk := os.read(st_r, 64):  # EOF at the exec (close-on-exec) or the exit
            failure += chunk
    finally:
        os.close(st_r)
    if failure:
        os.waitpid(pid, 0)
        os.close(out_r)
        os.close(err_r)
        code, _, stage = failure.decode().partition(":")
        number = int(code) or errno.EINVAL
        raise OSError(number, os.strerror(number), cwd if stage == "cwd" else command[0])
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
