"""A state directory belongs to one daemon at a time, and to nobody else: lock and file modes."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest
from harness import Lab, hasched, job_toml, wait_for

pytestmark = pytest.mark.integration


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def snapshot(directory: Path) -> dict[str, tuple[int, int, int]]:
    """(inode, size, mtime) of everything under a directory."""
    return {str(p): (p.lstat().st_ino, p.lstat().st_size, p.lstat().st_mtime_ns)
            for p in directory.rglob("*")}


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(hasched(*args), capture_output=True, text=True, timeout=60)


def test_a_second_scheduler_on_the_same_state_refuses_and_touches_nothing(lab: Lab) -> None:
    lab.agent("a1")
    s = lab.scheduler("a", role="standby")
    assert s.proc is not None
    before_state, before_run = snapshot(s.dir / "state"), snapshot(s.run_dir)
    socket_inode = s.socket.lstat().st_ino

    r = run("scheduler", "run", "--config", str(s.config), "--pidfile", str(s.pidfile))
    assert r.returncode == 1, r
    assert r.stderr.splitlines() == [
        f"state_dir {s.dir / 'state'}: in use by another hasched scheduler (pid {s.proc.pid}); "
        "not starting"]
    # It used to delete the running daemon's control socket (ctl then said "not running") and
    # open and write the same ledger before failing on the port.
    assert s.socket.lstat().st_ino == socket_inode
    assert s.status()["ok"] and s.status()["pid"] == s.proc.pid
    assert snapshot(s.dir / "state") == before_state and snapshot(s.run_dir) == before_run
    assert s.pidfile.read_text() == f"{s.proc.pid}\n"

    # the lock goes with its holder: once it stops, the state is free again
    assert s.proc.stop() == 0
    s.start("standby")
    assert s.status()["ok"]


def test_a_second_agent_on_the_same_state_refuses_and_touches_nothing(lab: Lab) -> None:
    a = lab.agent("a1")
    before = snapshot(a.dir / "state")
    r = run("agent", "run", "--config", str(a.dir / "agent.toml"))
    assert r.returncode == 1, r
    assert r.stderr.splitlines() == [
        f"state_dir {a.dir / 'state'}: in use by another hasched agent (pid {a.proc.pid}); "
        "not starting"]
    assert snapshot(a.dir / "state") == before
    assert a.call("health")["name"] == "a1"


def test_scheduler_state_is_private(lab: Lab) -> None:
    lab.agent("a1")
    lab.job("tick", job_toml("tick", every="2s", agent="a1", command="echo secret-output"))
    s = lab.scheduler("a")
    wait_for("a run collected with its output",
             lambda: [r for r in s.ledger_rows("tick") if r["output_path"]])
    state = s.dir / "state"
    assert mode(state) == 0o700
    files = [p for p in state.rglob("*") if p.is_file()]
    dirs = [p for p in state.rglob("*") if p.is_dir()]
    assert {p.name for p in files} >= {"ledger.sqlite", "ledger.sqlite-wal", "ledger.sqlite-shm"}
    assert any(p.name.endswith(".stdout") for p in files)
    assert {str(p): oct(mode(p)) for p in files} == {str(p): oct(0o600) for p in files}
    assert {str(p): oct(mode(p)) for p in dirs} == {str(p): oct(0o700) for p in dirs}


def test_state_of_an_older_version_is_made_private_at_start(lab: Lab) -> None:
    s = lab.scheduler("a", role="standby")
    assert s.proc is not None and s.proc.stop() == 0
    state = s.dir / "state"
    os.chmod(state, 0o755)
    os.chmod(state / "ledger.sqlite", 0o644)
    s.start("standby")
    assert mode(state) == 0o700 and mode(state / "ledger.sqlite") == 0o600


def test_an_unusable_state_dir_is_one_line(lab: Lab, tmp_path: Path) -> None:
    s = lab.scheduler("a", role="standby")
    assert s.proc is not None and s.proc.stop() == 0
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    config = s.config.read_text().replace(f'state_dir = "{s.dir / "state"}"',
                                          f'state_dir = "{blocker / "state"}"')
    s.config.write_text(config)
    r = run("scheduler", "run", "--config", str(s.config))
    assert r.returncode == 2, r
    assert r.stderr.splitlines() == [f"state_dir {blocker / 'state'}: cannot use it: "
                                     "Not a directory"]


def test_token_files_others_may_read_or_too_short_are_refused_at_start(lab: Lab) -> None:
    a = lab.agent("a1")
    s = lab.scheduler("a", role="standby")
    assert s.proc is not None and s.proc.stop() == 0 and a.proc.stop() == 0
    tokens = s.dir / "api-tokens"
    tokens.chmod(0o644)
    r = run("scheduler", "run", "--config", str(s.config))
    assert r.returncode == 2 and r.stderr.splitlines() == [
        f"{tokens}: token file: is readable by group or others (mode 0644); make it 0600 "
        f"(chmod 600 {tokens})"], r.stderr
    agent_token = a.dir / "token"
    agent_token.write_text("too-short\n")
    r = run("agent", "run", "--config", str(a.dir / "agent.toml"))
    assert r.returncode == 2 and r.stderr.splitlines() == [
        f"{agent_token}:1: token: shorter than 32 characters (make one with: openssl rand -hex "
        "32)"], r.stderr


def test_a_tokens_file_with_an_unknown_role_is_refused_at_start_and_nothing_is_written(
        lab: Lab) -> None:
    s = lab.scheduler("a", role="standby")
    assert s.proc is not None and s.proc.stop() == 0
    tokens = s.dir / "api-tokens"
    tokens.write_text(tokens.read_text() + "root-ish superuser " + "x" * 40 + "\n")
    before = s.ledger_path.stat().st_mtime_ns
    r = run("scheduler", "run", "--config", str(s.config))
    assert r.returncode == 2 and r.stderr.splitlines() == [
        f"{tokens}:4: role: 'superuser': must be one of viewer, operator, admin"], r.stderr
    assert "x" * 40 not in r.stderr and s.ledger_path.stat().st_mtime_ns == before
