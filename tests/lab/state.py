"""What the lab has made, kept on disk so `down` can undo it even after a failed or killed `up`.

Every creation is recorded *before* it is attempted; undo steps tolerate things that are already
gone. The file is rewritten atomically and guarded by a lock shared with the BMC process, which
also boots and kills nodes.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterator
from pathlib import Path

from .config import STATE_DIR

STATE_FILE = STATE_DIR / "state.json"
LOCK_FILE = STATE_DIR / "lock"


@contextlib.contextmanager
def locked() -> Iterator[None]:
    STATE_DIR.mkdir(parents=True, exist_ok=True)
    with open(LOCK_FILE, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def load() -> dict:
    try:
        return json.loads(STATE_FILE.read_text())
    except FileNotFoundError:
        return {"netns": [], "mounts": [], "pids": {}, "partitions": [], "crashed": []}


def save(state: dict) -> None:
    STATE_DIR.mkdir(parents=True, exist_ok=True)
    tmp = STATE_FILE.with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=2, sort_keys=True))
    os.replace(tmp, STATE_FILE)


def record(kind: str, value: str) -> None:
    """Note a namespace or mount about to be made (a list kind)."""
    state = load()
    if value not in state[kind]:
        state[kind].append(value)
    save(state)


def set_pid(name: str, pid: int | None) -> None:
    state = load()
    if pid is None:
        state["pids"].pop(name, None)
    else:
        state["pids"][name] = pid
    save(state)


def clear() -> None:
    for path in (STATE_FILE, Path(str(STATE_FILE) + ".tmp")):
        path.unlink(missing_ok=True)
