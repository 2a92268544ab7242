"""Process identity from /proc: a pid AND its start time, since after an agent restart a pid
alone may belong to some unrelated process by now.

The start time is computed exactly as psutil's Process.create_time() does on Linux (start ticks
/ SC_CLK_TCK + boot time), so times stored by either compare equal; reading /proc/PID/stat
directly costs a tenth of building a psutil.Process, and the agent does it for every run.
"""

from __future__ import annotations

import os

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
_boot_time: float | None = None


def boot_time() -> float:
    global _boot_time
    if _boot_time is None:
        with open("/proc/stat", "rb") as f:
            for line in f:
                if line.startswith(b"btime"):
                    _boot_time = float(line.split()[1])
                    break
            else:
                raise RuntimeError("/proc/stat: no btime line")
    return _boot_time


def ticks_to_time(ticks: str | int) -> float:
    return float(ticks) / CLOCK_TICKS + boot_time()


def stat_fields(pid: int) -> list[bytes] | None:
    """/proc/PID/stat after the command name (field 3, the state, comes first), or None when
    there is no such process. os.open, not open(): the launcher calls this, and a forked
    child shares the pages the launcher does not write to."""
    try:
        fd = os.open(f"/proc/{pid}/stat", os.O_RDONLY)
        try:
            return os.read(fd, 4096).rpartition(b")")[2].split()
        finally:
            os.close(fd)
    except OSError:
        return None


def start_ticks(pid: int) -> str:
    """The process's start time in clock ticks since boot (field 22), or "" when it is gone."""
    fields = stat_fields(pid)
    return fields[19].decode() if fields and len(fields) > 19 else ""


def proc_state(pid: int) -> tuple[str, float] | None:
    """(state letter, create time) or None when there is no such process."""
    fields = stat_fields(pid)
    try:
        return (fields[0].decode(), ticks_to_time(fields[19].decode())) if fields else None
    except (IndexError, ValueError):
        return None


def create_time(pid: int) -> float | None:
    """None when it is gone already (a quick run; the launcher's children are reaped at once)."""
    st = proc_state(pid)
    return st[1] if st else None


def process_alive(pid: int | None, ctime: float | None) -> bool:
    if not pid or ctime is None:
        return False
    st = proc_state(pid)
    return st is not None and st[0] not in ("Z", "X") and abs(st[1] - ctime) < 0.01
