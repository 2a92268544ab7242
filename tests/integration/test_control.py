"""The control socket and `hasched ctl` against a real scheduler process."""

from __future__ import annotations

import json
import os
import pwd
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from harness import Lab, hasched, job_toml

pytestmark = pytest.mark.integration


def raw(path: str, data: bytes) -> dict:
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(30)
        s.connect(path)
        s.sendall(data)
        return json.loads(s.makefile("rb").readline())


def ctl(s, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(hasched("ctl", "--socket", str(s.socket), *args), capture_output=True,
                          text=True, timeout=60)


def test_status_promote_demote_and_epoch_never_lowers(lab: Lab) -> None:
    lab.agent("a1")
    lab.job("j", job_toml("j", every="1h", agent="a1", command="true"))
    s = lab.scheduler("a", role="standby")
    st = s.status()
    assert st["ok"] and st["role"] == "standby" and st["epoch"] == 0
    assert st["pid"] == int(s.pidfile.read_text()) and st["jobs"] == 1 and st["agents"] == 1
    assert stat.S_IMODE(os.stat(s.socket).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(s.run_dir).st_mode) == 0o700

    assert s.ctl({"op": "promote", "epoch": 5}) == {"ok": True, "role": "active", "epoch": 5}
    assert s.ctl({"op": "promote", "epoch": 3})["epoch"] == 5  # never lowers
    assert s.ctl({"op": "demote"})["role"] == "standby"
    check = s.ctl({"op": "check"})
    assert check["ok"] and check["state_store"] == "ok" and check["jobs"] == 1

    # the epoch is durable: a restart keeps it
    assert s.proc is not None
    assert s.proc.stop() == 0
    s.start("standby")
    assert s.status()["epoch"] == 5


def test_bad_requests_get_one_line_errors(lab: Lab) -> None:
    s = lab.scheduler("a", role="standby")
    for data in (b"not json\n", b"[1]\n", b'{"op": "fly"}\n', b'{"op": "promote"}\n',
                 b'{"op": "promote", "epoch": -1}\n', b'{"op": "log-level", "level": "x"}\n'):
        answer = raw(str(s.socket), data)
        assert answer["ok"] is False and "\n" not in answer["error"], (data, answer)
    assert s.status()["ok"]  # still serving


def test_ctl_command_exit_codes(lab: Lab) -> None:
    s = lab.scheduler("a", role="standby")
    r = ctl(s, "status")
    assert r.returncode == 0 and json.loads(r.stdout)["role"] == "standby"
    r = ctl(s, "promote", "--epoch", "2")
    assert r.returncode == 0 and json.loads(r.stdout)["epoch"] == 2
    r = ctl(s, "log-level", "warning")
    assert r.returncode == 0
    r = ctl(s, "reload")
    assert r.returncode == 0 and json.loads(r.stdout)["jobs"] == 0
    assert s.proc is not None
    assert s.proc.stop() == 0
    r = ctl(s, "status")
    assert r.returncode == 7, r
    assert "nothing listening" in r.stderr


@pytest.mark.skipif(os.getuid() != 0, reason="needs root to run a client as another uid")
def test_peer_with_another_uid_is_refused(lab: Lab) -> None:
    # pytest's tmp dirs are 0700: the socket goes where `nobody` can walk to it
    outer = Path(tempfile.mkdtemp(prefix="hasched-ctl-"))
    os.chmod(outer, 0o711)
    try:
        _peer_refused(lab, outer / "run")
    finally:
        shutil.rmtree(outer, ignore_errors=True)


def _peer_refused(lab: Lab, run_dir: Path) -> None:
    s = lab.scheduler("a", role="standby", run_dir=run_dir)
    # Open the file modes so that only the SO_PEERCRED check stands between nobody and the socket.
    os.chmod(s.run_dir, 0o755)
    os.chmod(s.socket, 0o666)
    nobody = pwd.getpwnam("nobody").pw_uid
    code = ("import os, sys, json, socket\n"
            f"os.setgid({nobody}); os.setuid({nobody})\n"
            "s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1])\n"
            "s.sendall(b'{\"op\": \"demote\"}\\n')\n"
            "print(s.makefile().readline().strip())\n")
    # The base interpreter, isolated, from /: `nobody` may not be allowed into the checkout.
    r = subprocess.run([os.path.realpath(sys.executable), "-I", "-c", code, str(s.socket)],
                       capture_output=True, text=True, timeout=60, cwd="/")
    assert r.returncode == 0, r.stderr
    answer = json.loads(r.stdout)
    assert answer["ok"] is False and f"uid {nobody}" in answer["error"]
