"""`hasched scheduler run` as a user meets it: bad input, bad job files, reload, signals."""

from __future__ import annotations

import signal
import socket
import subprocess

import pytest
from conftest import Lab, hasched, job_toml, wait_for

pytestmark = pytest.mark.integration


def test_bad_config_is_one_line_exit_2(lab: Lab) -> None:
    cfg = lab.root / "bad.toml"
    cfg.write_text('[scheduler]\nlisten = "127.0.0.1:notaport"\n')
    r = subprocess.run(hasched("scheduler", "run", "--config", str(cfg)), capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{cfg}:2:"), r.stderr
    assert "Traceback" not in r.stderr


def test_missing_jobs_dir_is_one_line_exit_2(lab: Lab) -> None:
    lab.agent("a1")
    s = lab.scheduler("a", role="standby")
    assert s.proc is not None and s.proc.stop() == 0  # SIGTERM: clean exit 0
    lab.jobs_dir.rmdir()
    r = subprocess.run(hasched("scheduler", "run", "--config", str(s.config)),
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "jobs_dir" in r.stderr and "Traceback" not in r.stderr


def test_reload_is_all_or_nothing_and_says_so(lab: Lab) -> None:
    lab.agent("a1")
    lab.job("good", job_toml("good", every="1h", agent="a1", command="true"))
    lab.job("bad", 'this is = not toml [')
    s = lab.scheduler("a", role="standby")
    assert s.status()["jobs"] == 1  # started with the good file: a daemon must come up
    assert s.proc is not None
    assert "bad.toml" in s.proc.logtext()
    check = s.ctl({"op": "check"})
    assert len(check["job_errors"]) == 1 and "bad.toml" in check["job_errors"][0]

    # `bad` turns good, `good` turns bad: nothing changes, the answer says so, exit 1
    lab.job("good", job_toml("good", every="1h", agent="a1", command="true") + "every = 3\n")
    lab.job("bad", job_toml("fixed", every="1h", agent="a1", command="true"))
    answer = s.ctl({"op": "reload"})
    assert not answer["ok"] and answer["jobs"] == 1 and len(answer["errors"]) == 1, answer
    assert "good.toml" in answer["errors"][0] and "unchanged" in answer["error"]
    definitions = s.status()["definitions"]
    assert definitions["stale"] and definitions["failed_at"] and definitions["errors"]
    r = subprocess.run(hasched("ctl", "--socket", str(s.socket), "reload"), capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 1 and '"ok": false' in r.stdout, r

    # the jobs directory moved away: nothing changes either (it used to drop every job)
    moved = lab.jobs_dir.with_name("jobs.moved")
    lab.jobs_dir.rename(moved)
    answer = s.ctl({"op": "reload"})
    assert not answer["ok"] and answer["jobs"] == 1 and "cannot read" in answer["errors"][0]
    moved.rename(lab.jobs_dir)

    # SIGHUP reloads too
    lab.job("good", job_toml("good", every="1h", agent="a1", command="true"))
    s.proc.p.send_signal(signal.SIGHUP)  # type: ignore[union-attr]
    wait_for("the reload after SIGHUP", lambda: s.ctl({"op": "check"})["job_errors"] == [])
    assert s.status()["jobs"] == 2 and s.status()["definitions"] == {"stale": False}


def test_a_listen_address_that_cannot_be_had_names_the_setting(lab: Lab) -> None:
    s = lab.scheduler("a", role="standby")
    assert s.proc is not None and s.proc.stop() == 0
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        s.config.write_text(s.config.read_text().replace(f"127.0.0.1:{s.port}",
                                                         f"127.0.0.1:{port}"))
        r = subprocess.run(hasched("scheduler", "run", "--config", str(s.config)),
                           capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
    errors = [line for line in r.stderr.splitlines() if " ERROR " in line]
    assert len(errors) == 1 and errors[0].endswith(
        f"{s.config}: scheduler.listen: cannot listen on 127.0.0.1:{port}: "
        f"error while attempting to bind on address ('127.0.0.1', {port}): "
        "address already in use"), r.stderr
