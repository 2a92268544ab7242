"""One run's supervisor, and the launcher that forks them.

    python -m scheduler.agent.supervise RUNDIR            one supervisor (the fallback path)
    python -m scheduler.agent.supervise --launcher FD DIR the launcher (DIR: for `ps` only)

The agent starts one supervisor per run in a new session, so that the run survives an agent
restart or crash. Normally the launcher forks it: a process started once by the agent that has
this module imported already, so a run costs one fork instead of an interpreter start-up.

The supervisor starts the command in a group of the run's own (a cgroup, or its process group:
see cgroup.py), copies its output into RUNDIR/stdout and RUNDIR/stderr (up to the limit, the
rest counted), enforces the timeout, ends whatever is left of the run once the command is over,
and then writes RUNDIR/result.json. SIGTERM from the agent means "cancel".

Standard library only: the launcher should start fast and stay small, and it must not import
the agent's code (nor hold its sockets, database or token).
"""

from __future__ import annotations

import json
import os
import pwd
import select
import signal
import socket
import sys
import time
import traceback
from typing import Any

from setproctitle import setproctitle

from scheduler.agent import cgroup, spawn
from scheduler.agent.procs import start_ticks
from scheduler.times import log_line, utc_iso

# Not `subprocess` nor `pathlib`: see scheduler/agent/spawn.py.

DRAIN_AFTER_EXIT = 2.0  # seconds to keep reading pipes held open by the job's leftovers
CHUNK = 65536
CLAIM = "started.json"  # created exclusively: see claim()
MAX_REQUEST = 65536  # bigger specs go through RUNDIR/spec.json
STOP_SIGNALS = {signal.SIGTERM, signal.SIGINT}


def write_file(path: str, data: bytes, sync: bool = False) -> None:
    """Create or overwrite `path` with `data`; fsync it if asked. os.open and os.write, not
    open(): a file object (io's classes, the text encoding) costs a forked child more pages
    than the write itself."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
    try:
        while data:
            data = data[os.write(fd, data):]
        if sync:
            os.fsync(fd)
    finally:
        os.close(fd)


def sync_dir(path: str) -> None:
    dfd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def publish_result(rundir: str, data: dict[str, Any]) -> None:
    """Write RUNDIR/result.json: either absent or complete, and durable once this returns.

    The claim file (started.json) is rewritten with the result (its readers take a partial
    file for "try again later"), fsynced, then hard-linked as result.json, which appears
    whole at once; the directory is then fsynced. Not a new file renamed into place: on a
    busy ext4 each inode allocated costs more than the rest of a short run (see Sink). The
    claim keeps existing, so a late second supervisor still leaves the run alone."""
    claim_path = os.path.join(rundir, CLAIM)
    path = os.path.join(rundir, "result.json")
    body = json.dumps(data).encode()
    try:
        write_file(claim_path, body, sync=True)
        os.link(claim_path, path)
    except OSError:  # no hard links here: a new file, renamed into place
        write_file(path + ".tmp", body, sync=True)
        os.rename(path + ".tmp", path)
    sync_dir(rundir)


class Sink:
    """One output stream into a file, capped at `limit` bytes. The file is created with the
    first byte: most runs write nothing to one stream or both, and on a busy ext4 each inode
    allocated costs more than the rest of a short run (a missing file reads as empty)."""

    def __init__(self, path: str, limit: int):
        self.path = path
        self.file: Any = None
        self.limit = limit
        self.written = 0
        self.dropped = 0  # bytes beyond the limit, read and thrown away
        self.truncated = False

    def write(self, data: bytes) -> None:
        room = self.limit - self.written
        if len(data) > room:
            self.truncated = True
            self.dropped += len(data) - max(room, 0)
            data = data[: max(room, 0)]
        if data:
            if self.file is None:
                self.file = open(self.path, "wb")
            self.file.write(data)
            self.file.flush()
            self.written += len(data)

    def close(self) -> None:
        if self.file is None:
            return
        self.file.flush()
        os.fsync(self.file.fileno())
        self.file.close()


class Supervisor:
    def __init__(self, rundir: str, spec: dict[str, Any] | None = None):
        self.rundir = rundir  # absolute (see main()): the job's start moves us to its cwd
        if spec is None:
            with open(os.path.join(rundir, "spec.json")) as f:
                spec = json.load(f)
        self.spec: dict[str, Any] = spec
        self.cancelled = False
        self.timed_out = False
        self.term_sent_at: float | None = None
        self.killed = False
        self.child: int | None = None  # the job's pid
        self.group: cgroup.ProcessGroup = cgroup.ProcessGroup()  # every process of the run
        self.started_at = utc_iso()
        self.job_started_at: str | None = None  # when the job's process existed (exec'd)
        self.wake_r, self.wake_w = os.pipe()
        os.set_blocking(self.wake_w, False)
        signal.set_wakeup_fd(self.wake_w)
        signal.signal(signal.SIGTERM, self._on_term)
        signal.signal(signal.SIGINT, self._on_term)
        # Caught (not ignored), so that the job's exit wakes the select through the wakeup fd
        # at once instead of at its next timeout; exec resets it to the default in the job.
        signal.signal(signal.SIGCHLD, lambda signum, frame: None)
        # No SIGHUP handling: an ignored signal would stay ignored in the job after exec.
        # The agent starts us with these blocked; a cancel sent meanwhile is delivered now.
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM, signal.SIGINT})

    def _on_term(self, signum: int, frame: Any) -> None:
        self.cancelled = True

    def _finish(self, **fields: Any) -> None:
        result = {
            "exit_code": None, "signal": None, "timed_out": self.timed_out,
            "cancelled": self.cancelled and not self.timed_out and (
                self.child is None or self.term_sent_at is not None), "error": None,
            "started_at": self.started_at, "job_started_at": self.job_started_at,
            "finished_at": utc_iso(),
            "pid": self.child,
            "stdout_bytes": 0, "stderr_bytes": 0, "truncated": False,
        }
        result.update(fields)
        result["supervisor_pid"] = os.getpid()  # still the claim's content, too
        publish_result(self.rundir, result)

    def _prepare(self) -> tuple[pwd.struct_passwd, str, cgroup.ProcessGroup] | None:
        """(account, cwd, the run's group) to start the job with, or None: the run is over
        (refused, or cancelled before anything started) and its result written."""
        account, error = spawn.resolve_user(self.spec)
        if error:
            self._finish(error=error)
            return None
        if self.cancelled:
            self._finish()
            return None
        cwd = self.spec.get("cwd") or spawn.default_cwd(account)
        if not os.path.isdir(cwd):  # else exec's ENOENT would read as "command not found"
            self._finish(error=f"cwd {cwd} does not exist (or is not a directory)")
            return None
        group, error = cgroup.open_run_group(self.spec, self.rundir)
        if error:
            self._finish(error=error)
            return None
        return account, cwd, group

    def run(self) -> None:
        prepared = self._prepare()
        if prepared is None:
            return
        account, cwd, group = prepared
        self.group = group
        limit = int(self.spec["output_limit"])
        sinks = {
            "stdout": Sink(os.path.join(self.rundir, "stdout"), limit),
            "stderr": Sink(os.path.join(self.rundir, "stderr"), limit),
        }
        try:
            self.child, out_fd, err_fd = spawn.start_job(
                self.spec["command"], cwd, spawn.job_env(self.spec, account), account, group)
        except cgroup.GroupError as e:
            for s in sinks.values():
                s.close()
            group.close()
            self._finish(error=str(e))
            return
        except OSError as e:
            for s in sinks.values():
                s.close()
            group.close()
            what = e.strerror or str(e)
            if e.filename == cwd:  # exists, but the job's account cannot enter it
                self._finish(error=f"cwd {cwd}: {what}")
            else:
                self._finish(error=f"cannot start {self.spec['command'][0]!r}: {what}")
            return
        self.job_started_at = utc_iso()
        group.started(self.child)
        # Not fsynced: a job pid means nothing after a power cut. Rewritten in place (a reader
        # may meet a partial file and tries again later), which costs no new inode.
        write_file(os.path.join(self.rundir, CLAIM), json.dumps({
            "pid": self.child, "started_at": self.started_at,
            "supervisor_pid": os.getpid()}).encode())
        status = self._pump({out_fd: sinks["stdout"], err_fd: sinks["stderr"]})
        for s in sinks.values():
            s.close()
        fields: dict[str, Any] = {
            "stdout_bytes": sinks["stdout"].written, "stderr_bytes": sinks["stderr"].written,
            "truncated": sinks["stdout"].truncated or sinks["stderr"].truncated,
            "stdout_dropped": sinks["stdout"].dropped, "stderr_dropped": sinks["stderr"].dropped,
        }
        if os.WIFSIGNALED(status):
            fields["signal"] = os.WTERMSIG(status)
        else:
            fields["exit_code"] = os.WEXITSTATUS(status)
        if group.oom_kills():
            fields["oom_killed"] = True
        left = group.close()
        if left:  # stuck in the kernel (state D): said, not hidden
            fields["left_running"] = left
        self._finish(**fields)

    def _pump(self, pipes: dict[int, Sink]) -> int:  # noqa: C901, PLR0912 - one poll loop: output, exit, timeout and the stop sequence share its state, and split each turn would cost calls in the forked child
        """Copy output until the job has exited, every process of the run is gone and the pipes
        are drained; return the job's wait status.

        Whatever the run started ends with it: once the job (the leader) has exited, or at its
        timeout or cancel, every process left in its group gets SIGTERM, then SIGKILL after
        kill_grace, even after the leader was reaped."""
        assert self.child is not None
        group = self.group
        poller = select.poll()  # not selectors: far less Python run in a forked child
        for fd in (*pipes, self.wake_r):
            poller.register(fd, select.POLLIN)
        timeout = self.spec.get("timeout")
        grace = float(self.spec["kill_grace"])
        deadline = time.monotonic() + timeout if timeout else None
        status: int | None = None
        stop_at: float | None = None  # when SIGTERM went to the run's processes
        drain_until = 0.0
        open_pipes = 2
        while True:
            for fd, _ in poller.poll(200 if open_pipes or status is None else 50):
                if fd == self.wake_r:
                    os.read(self.wake_r, 512)  # a signal arrived; its flag is already set
                    continue
                data = os.read(fd, CHUNK)
                if data:
                    pipes[fd].write(data)
                else:
                    poller.unregister(fd)
                    os.close(fd)
                    open_pipes -= 1
            now = time.monotonic()
            if status is None:
                pid, st = os.waitpid(self.child, os.WNOHANG)
                if pid:
                    status = st
                    drain_until = now + DRAIN_AFTER_EXIT
                elif deadline is not None and now >= deadline and not self.cancelled:
                    self.timed_out = True
            if status is not None and group.empty():
                # Nothing of the run is left; a pipe still open was passed on to some process
                # outside it (or the fallback's setsid escapee): drained for a while, no more.
                if not open_pipes or now >= drain_until:
                    return status
                continue
            if stop_at is None and (status is not None or self.timed_out or self.cancelled):
                group.signal(signal.SIGTERM)
                stop_at = now
                if status is None:
                    self.term_sent_at = now  # the job itself was stopped: timeout or cancel
            if stop_at is not None and now >= stop_at + grace:
                group.signal(signal.SIGKILL)  # again at each turn: what forked meanwhile
                self.killed = True
                if status is not None and now >= stop_at + grace + cgroup.GONE_WAIT:
                    return status  # stuck in the kernel: close() names what is left

def claim(rundir: str) -> bool:
    """Become THE supervisor of this run, or learn that another one already is: should a spawn
    be retried after the launcher died mid-request, two supervisors may start; one runs it.
    started.json names the supervisor from then on, and the job's pid once it is started."""
    try:
        fd = os.open(os.path.join(rundir, CLAIM), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return False
    try:
        os.write(fd, json.dumps({"supervisor_pid": os.getpid()}).encode())
    finally:
        os.close(fd)
    return True


def supervise(rundir: str, spec: dict[str, Any] | None = None) -> int:
    # Nothing of whoever started us reaches the job: Popen closed every fd beyond 0-2 in it,
    # posix_spawn does not (ours are close-on-exec; an inherited one need not be).
    os.closerange(3, os.sysconf("SC_OPEN_MAX"))
    if not claim(rundir):
        print(log_line("WARNING", "hasched.supervisor", f"{rundir}: another supervisor has "
                       "claimed this run; leaving it"), file=sys.stderr)
        return 0
    Supervisor(rundir, spec).run()
    return 0


def forked_supervisor(rundir: str, spec: str) -> None:
    """The launcher's child: becomes a run's supervisor and never returns. Its stderr stays
    the launcher's, which is the agent's: a traceback lands in the agent's log."""
    code = 1
    try:
        os.setsid()  # its own session, as with the exec path: it outlives agent and launcher
        # Else it shows in ps as the launcher it was forked from, and no admin can tell which
        # process supervises which run.
        setproctitle(f"hasched supervisor {os.path.basename(rundir)}")
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)  # it waits for its job
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.close(null)
        os.chdir("/")
        try:
            os.mkdir(rundir, 0o700)
        except FileExistsError:
            pass
        code = supervise(rundir, json.loads(spec) if spec else None)  # "": in spec.json
    except BaseException:  # a line the agent's log can place in time, then the traceback
        print(log_line("ERROR", "hasched.supervisor", f"{rundir}: failed:"), file=sys.stderr)
        traceback.print_exc()
    finally:
        os._exit(code)


def serve_launches(fd: int) -> int:
    """The launcher: one request per SEQPACKET message, "TAG\nRUNDIR\nSPEC-JSON"; the answer
    is "TAG\nPID START-TICKS", or "TAG\n!error". Exits when the agent's end closes."""
    sock = socket.socket(fileno=fd)
    # The kernel reaps each supervisor as it exits (SIGCHLD ignored): its outcome is in
    # result.json, so nobody needs its exit status, no zombie piles up here, and one fork per
    # run suffices (a double fork would cost a second fork for the same effect). If this
    # launcher dies, its supervisors are simply re-parented, as they are when the agent dies.
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)
    spawn.launcher_account = pwd.getpwuid(os.getuid())
    while True:
        try:
            msg = sock.recv(MAX_REQUEST)
        except OSError:
            msg = b""
        if not msg:
            return 0
        tag, rundir, spec = (msg.decode().split("\n", 2) + ["", ""])[:3]
        # TERM and INT stay blocked in the child until the supervisor has its handlers: a
        # cancel that comes right after the dispatch must not kill it.
        old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
        try:
            pid = os.fork()
        except OSError as e:
            answer = f"{tag}\n!cannot fork: {e.strerror or e}"
        else:
            if pid == 0:
                sock.close()
                forked_supervisor(rundir, spec)
            answer = f"{tag}\n{pid} {start_ticks(pid)}"
        signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
        try:
            sock.send(answer.encode())
        except OSError:
            return 0


def main(argv: list[str]) -> int:
    if len(argv) == 3 and argv[0] == "--launcher":
        setproctitle(f"hasched launcher {argv[2]}")
        return serve_launches(int(argv[1]))
    if len(argv) != 1:
        print("usage: python -m scheduler.agent.supervise RUNDIR | --launcher FD DIR",
              file=sys.stderr)
        return 2
    return supervise(os.path.abspath(argv[0]))  # the launcher sends absolute paths


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
