"""The agent's side of the launcher: start it, ask it for supervisors, restart it when it dies,
and fall back to exec'ing a supervisor when it cannot be had.

The launcher is `python -m scheduler.agent.supervise --launcher FD DIR`, exec'd (not merely
forked) with only its end of a socketpair open: it holds none of the agent's sockets or SQLite
handles, and the token was never in its memory. It forks each supervisor (see supervise.py);
that is one fork per run instead of an interpreter start-up, and none of it in the agent.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import scheduler
from scheduler.agent.procs import create_time, ticks_to_time
from scheduler.agent.supervise import MAX_REQUEST, STOP_SIGNALS

log = logging.getLogger("hasched.agent")

PACKAGE_ROOT = str(Path(scheduler.__file__).resolve().parents[1])
RESTART_BACKOFF = (0.1, 0.5, 2.0, 5.0)  # after quick successive deaths; exec path meanwhile
STABLE_AFTER = 30.0  # a launcher that lived this long resets the backoff


class LauncherGone(Exception):
    """The launcher died before answering: the supervisor may or may not have been forked."""


def supervisor_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (PACKAGE_ROOT, env.get("PYTHONPATH")) if p)
    return env


def write_spec(rundir: Path, spec: dict[str, Any]) -> None:
    rundir.mkdir(mode=0o700, exist_ok=True)
    (rundir / "spec.json").write_text(json.dumps(spec))


def exec_supervisor(rundir: Path, spec: dict[str, Any]) -> subprocess.Popen[bytes]:
    """The fallback: a fresh interpreter per run (~20 ms of CPU). Blocks: call it in a thread."""
    write_spec(rundir, spec)
    # TERM and INT blocked (this thread's mask is what the child gets, and it survives exec)
    # until the supervisor has its handlers.
    old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        with open(rundir / "supervisor.log", "ab") as errlog:
            return subprocess.Popen(
                [sys.executable, "-m", "scheduler.agent.supervise", str(rundir)],
                stdin=subprocess.DEVNULL, stdout=errlog, stderr=errlog, cwd="/",
                env=supervisor_env(), start_new_session=True,  # it outlives the agent
            )
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)


class _Launcher:
    """One launcher process and its socket."""

    def __init__(self, proc: subprocess.Popen[bytes], sock: socket.socket):
        self.proc = proc
        self.sock = sock
        self.pending: dict[int, asyncio.Future[tuple[int, float | None]]] = {}
        self.tags = itertools.count()
        self.send_lock = asyncio.Lock()
        self.alive = True
        self.started = time.monotonic()
        self.reader = asyncio.get_running_loop().create_task(self._read())

    async def spawn(self, rundir: Path, spec: dict[str, Any]) -> tuple[int, float | None]:
        """(pid, create time) of a supervisor forked for the run."""
        if not self.alive:
            raise LauncherGone("the launcher is gone")
        loop = asyncio.get_running_loop()
        tag = next(self.tags)
        msg = f"{tag}\n{rundir}\n{json.dumps(spec)}".encode()
        if len(msg) > MAX_REQUEST:  # a huge command or env: through the run's directory
            await loop.run_in_executor(None, write_spec, rundir, spec)
            msg = f"{tag}\n{rundir}\n".encode()
        fut = asyncio.get_running_loop().create_future()
        self.pending[tag] = fut
        try:
            # One small message on a SEQPACKET socket: sent whole or not at all, never blocks
            # for long (the launcher answers in order and the buffer holds hundreds).
            async with self.send_lock:  # the loop keeps one writer per socket: one at a time
                await loop.sock_sendall(self.sock, msg)
        except OSError as e:
            self.pending.pop(tag, None)
            raise LauncherGone(f"the launcher is gone: {e}") from None
        return await fut

    async def _read(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while True:
                msg = await loop.sock_recv(self.sock, 4096)
                if not msg:
                    break
                tag, _, body = msg.decode().partition("\n")
                fut = self.pending.pop(int(tag), None)
                if fut is None or fut.done():
                    continue
                if body.startswith("!"):
                    fut.set_exception(OSError(body[1:]))
                else:
                    pid, _, ticks = body.partition(" ")
                    fut.set_result((int(pid), ticks_to_time(ticks) if ticks else None))
        except OSError:
            pass
        finally:
            self.alive = False
            self.sock.close()
            for fut in self.pending.values():
                if not fut.done():
                    fut.set_exception(LauncherGone("the launcher died before answering"))
            self.pending.clear()

    async def close(self) -> None:
        self.alive = False
        self.sock.close()  # the launcher sees EOF and exits
        self.reader.cancel()
        try:
            await asyncio.get_running_loop().run_in_executor(None, self.proc.wait, 10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


class Spawner:
    """Starts supervisors: through the launcher, restarted when it dies, else by exec."""

    def __init__(self, output_dir: Path):
        self.output_dir = output_dir
        self.current: _Launcher | None = None
        self.deaths = 0
        self.next_start = 0.0
        self._starting: asyncio.Task[_Launcher | None] | None = None
        self._watch: asyncio.Task[None] | None = None
        self.closing = False

    async def start(self) -> None:
        await self._launcher()
        self._watch = asyncio.get_running_loop().create_task(self._restart_when_dead())

    async def _start_launcher(self) -> _Launcher | None:
        loop = asyncio.get_running_loop()
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            proc = await loop.run_in_executor(None, lambda: subprocess.Popen(
                [sys.executable, "-m", "scheduler.agent.supervise", "--launcher",
                 str(theirs.fileno()), str(self.output_dir)],
                stdin=subprocess.DEVNULL, cwd="/", env=supervisor_env(),
                pass_fds=(theirs.fileno(),),  # and nothing else of ours: close_fds
            ))
        except OSError as e:
            ours.close()
            log.error("cannot start the launcher, exec'ing supervisors instead: %s", e)
            return None
        finally:
            theirs.close()
        ours.setblocking(False)
        log.info("launcher started (pid %d)", proc.pid)
        return _Launcher(proc, ours)

    async def _launcher(self) -> _Launcher | None:
        """The live launcher, (re)started if need be and not backing off; None: exec instead."""
        if self.current is not None and self.current.alive:
            return self.current
        if self.closing or time.monotonic() < self.next_start:
            return None
        if self._starting is None:
            self._starting = asyncio.get_running_loop().create_task(self._start_launcher())
            try:
                self.current = await self._starting
            finally:
                self._starting = None
            if self.current is None:
                self.next_start = time.monotonic() + RESTART_BACKOFF[-1]
            return self.current
        return await asyncio.shield(self._starting)

    async def _restart_when_dead(self) -> None:
        """Restart the launcher soon after it dies, not at the next run's expense."""
        while not self.closing:
            launcher = self.current
            if launcher is not None:
                await asyncio.shield(launcher.reader)
                if self.closing:
                    return
                code = await asyncio.get_running_loop().run_in_executor(None, launcher.proc.wait)
                lived = time.monotonic() - launcher.started
                self.deaths = 0 if lived > STABLE_AFTER else self.deaths + 1
                delay = RESTART_BACKOFF[min(self.deaths, len(RESTART_BACKOFF) - 1)]
                log.warning("the launcher (pid %d) died with status %s; restarting it in %gs",
                            launcher.proc.pid, code, delay)
                self.next_start = time.monotonic() + delay
            await asyncio.sleep(max(0.0, self.next_start - time.monotonic()) or 1.0)
            await self._launcher()

    async def spawn(
        self, rundir: Path, spec: dict[str, Any]
    ) -> tuple[int, float | None, subprocess.Popen[bytes] | None]:
        """(supervisor pid, its create time, its Popen when this process is its parent)."""
        for _ in range(2):
            launcher = await self._launcher()
            if launcher is None:
                break
            try:
                return *(await launcher.spawn(rundir, spec)), None
            except LauncherGone as e:
                # Retrying is safe: should the first request have forked a supervisor after
                # all, the run's claim file lets only one of the two run it.
                log.warning("%s while starting %s; retrying", e, rundir)
        popen = await asyncio.get_running_loop().run_in_executor(
            None, exec_supervisor, rundir, spec)
        return popen.pid, create_time(popen.pid), popen

    async def close(self) -> None:
        self.closing = True
        if self._watch is not None:
            self._watch.cancel()
        if self.current is not None:
            await self.current.close()
