"""scheduler.statedir: one daemon per state directory, private from the start."""

from __future__ import annotations

import os
import stat

import pytest

from scheduler.statedir import (
    StateDirBusy,
    StateDirError,
    lock_state_dir,
    make_private,
    private_dir,
    write_private,
)

pytestmark = pytest.mark.unit


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_a_second_lock_on_the_same_state_is_refused_until_the_first_goes(tmp_path):
    state = tmp_path / "state"
    first = lock_state_dir(state, "scheduler")
    with pytest.raises(StateDirBusy) as info:
        lock_state_dir(state, "scheduler")
    assert str(info.value) == (f"state_dir {state}: in use by another hasched scheduler "
                               f"(pid {os.getpid()}); not starting")
    assert (state / "lock").read_text() == f"{os.getpid()}\n"
    first.release()
    lock_state_dir(state, "scheduler").release()


def test_state_is_made_private_whatever_the_umask(tmp_path):
    old = os.umask(0)
    try:
        state = private_dir(tmp_path / "a" / "state")
        write_private(state / "out.stdout", "secret")
        lock_state_dir(state, "agent").release()
    finally:
        os.umask(old)
    assert mode(state) == 0o700
    assert mode(state / "out.stdout") == 0o600 and mode(state / "lock") == 0o600
    loose = tmp_path / "loose"
    loose.write_text("")
    loose.chmod(0o644)
    make_private(loose, tmp_path / "absent")
    assert mode(loose) == 0o600


def test_an_unusable_state_dir_is_one_line(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(StateDirError) as info:
        lock_state_dir(blocker / "state", "scheduler")
    assert str(info.value) == f"state_dir {blocker / 'state'}: cannot use it: Not a directory"
