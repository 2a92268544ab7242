"""A daemon's state directory: made private (0700, files 0600) and locked for the daemon's life.

Both daemons (scheduler and agent) take the lock before anything else touches their state, their
control socket or their ledger: a second instance on the same state directory used to delete the
running one's control socket and write the same ledger before failing on its port. The lock is an
fcntl (flock) lock on `<state_dir>/lock`: the kernel drops it when the process dies, however it
dies, so a stale lock file never keeps a daemon from starting again.
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat
from pathlib import Path

LOCK_NAME = "lock"
DIR_MODE = 0o700
FILE_MODE = 0o600


class StateDirError(RuntimeError):
    """The state directory cannot be used; str() is one line that names it."""


class StateDirBusy(StateDirError):
    """Another process holds the state directory's lock."""


def _cause(exc: OSError) -> str:
    return exc.strerror or str(exc)


def private_dir(path: str | Path, what: str = "state_dir") -> Path:
    """Create path (and its parents) if missing and make it 0700 and writable by us; one
    clear StateDirError when that cannot be done (no traceback for an unwritable state_dir)."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True, mode=DIR_MODE)
        if not path.is_dir():
            raise StateDirError(f"{what} {path}: not a directory")
        st = path.stat()
        # State written by an older version was 0755. A directory someone else owns (root's,
        # shared with a group on purpose) is left as its owner made it.
        if stat.S_IMODE(st.st_mode) != DIR_MODE and st.st_uid == os.geteuid():
            os.chmod(path, DIR_MODE)
    except OSError as exc:
        raise StateDirError(f"{what} {path}: cannot use it: {_cause(exc)}") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise StateDirError(f"{what} {path}: cannot use it: not writable by uid {os.getuid()}")
    return path


def make_private(*paths: str | Path) -> None:
    """chmod 0600 every one of paths that exists (files an older version made 0644)."""
    for path in paths:
        try:
            st = os.lstat(path)
            if stat.S_IMODE(st.st_mode) & 0o077 and st.st_uid == os.geteuid():
                os.chmod(path, FILE_MODE)
        except FileNotFoundError:
            pass


def write_private(path: str | Path, text: str) -> None:
    """Write a file that only its owner may read (0600 from its creation on, whatever the
    umask; an existing file is made 0600 too)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC | os.O_NOFOLLOW,
                 FILE_MODE)
    try:
        os.fchmod(fd, FILE_MODE)
        with os.fdopen(fd, "w", encoding="utf-8", errors="replace", closefd=False) as f:
            f.write(text)
    finally:
        os.close(fd)


def write_private_files(directory: Path, texts: dict[Path, str], what: str) -> None:
    """Write files of `directory` (made private first; `what` names it in an error) with
    write_private: the run output files the collector and the follower store."""
    private_dir(directory, what)
    for path, text in texts.items():
        write_private(path, text)


class StateLock:
    """The exclusive lock on one state directory, held until release() or the process's end."""

    def __init__(self, state_dir: Path, fd: int) -> None:
        self.state_dir, self._fd = state_dir, fd

    def release(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)  # closing the only descriptor drops the flock
            self._fd = -1


def lock_state_dir(state_dir: str | Path, daemon: str, what: str = "state_dir") -> StateLock:
    """Make state_dir private and lock it for this process, writing our pid in the lock file.

    Raises StateDirError, one line, when another process holds it: nothing else is touched.
    """
    directory = private_dir(state_dir, what)
    path = directory / LOCK_NAME
    try:
        # Not O_TRUNC: the holder's pid stays readable until we hold the lock ourselves.
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, FILE_MODE)
    except OSError as exc:
        raise StateDirError(f"{what} {directory}: cannot open {path}: {_cause(exc)}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        holder = _read_pid(fd)
        os.close(fd)
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
            by = f" (pid {holder})" if holder else ""
            raise StateDirBusy(f"{what} {directory}: in use by another hasched {daemon}{by}; "
                                "not starting") from None
        raise StateDirError(f"{what} {directory}: cannot lock {path}: {_cause(exc)}") from None
    try:
        os.fchmod(fd, FILE_MODE)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    except OSError as exc:
        os.close(fd)
        raise StateDirError(f"{what} {directory}: cannot write {path}: {_cause(exc)}") from None
    return StateLock(directory, fd)


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None
