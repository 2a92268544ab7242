"""Which account a job runs as: the agent's default_user (nobody under root), never the agent's
own account unless its configuration allows it, so no job can read the agent's token."""

from __future__ import annotations

import os
import pwd
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from harness import Agent, agent_command, order, run_async, wait_final

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(os.geteuid() != 0, reason="switching accounts needs root")]

STRICT = {"default_user": None, "allow_agent_account": None}  # the agent's defaults


def run(a: Agent, run_id: str, command: list[str], **kw: object) -> tuple[dict, str, str]:
    async def body() -> tuple[dict, str, str]:
        c = a.client()
        try:
            await c.dispatch(order(run_id, command, **kw))
            done = await wait_final(c, run_id)
            return (done, await c.output(run_id, 1), await c.output(run_id, 1, "stderr"))
        finally:
            await c.close()
    return run_async(body)


def test_jobs_run_as_nobody_and_cannot_read_the_agent_token(
        agent_factory: Callable[..., Agent]) -> None:
    a = agent_factory(**STRICT)
    a.token_file.chmod(0o600)  # as deployed: the agent's account only
    done, out, _ = run(a, "who@1", ["id", "-un"])
    assert done["state"] == "succeeded" and out.strip() == "nobody", (done, out)
    done, out, err = run(a, "peek@1", ["cat", str(a.token_file)])
    assert done["state"] == "failed" and "Permission denied" in err, (done, err)
    assert out == ""
    # Nor the agent's store (state_dir is 0700).
    done, _, err = run(a, "peek-db@1", ["cat", str(a.state_dir / "agent.sqlite")])
    assert done["state"] == "failed" and "Permission denied" in err, (done, err)


@pytest.mark.parametrize("settings, user", [
    ({"default_user": '"root"', "allow_agent_account": None}, None),  # as the default
    (STRICT, "root"),  # asked for by the order
])
def test_the_agent_account_is_refused_unless_allowed(
        agent_factory: Callable[..., Agent],
        tmp_path: Path, settings: dict, user: str | None) -> None:
    a = agent_factory(**settings)
    mark = tmp_path / "ran"
    done, _, _ = run(a, "as-agent@1", ["touch", str(mark)], user=user)
    assert done["state"] == "failed", done
    assert done["reason"] == ("cannot run as user 'root': it is the agent's own account "
                              "(allow_agent_account is not set in the agent's configuration)")
    assert not mark.exists()


def test_allowed_the_agent_account_runs_jobs(agent_factory: Callable[..., Agent]) -> None:
    a = agent_factory(default_user='"root"', allow_agent_account="true")
    done, out, _ = run(a, "as-root@1", ["id", "-un"])
    assert done["state"] == "succeeded" and out.strip() == "root"


def test_an_unknown_default_user_stops_the_start_in_one_line(tmp_path: Path) -> None:
    a = Agent(tmp_path / "a", default_user='"no-such-user-hasched"')
    proc = subprocess.run(agent_command(a.config), capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"{a.config}: default_user: no such user 'no-such-user-hasched'"], proc.stderr


def test_a_job_as_nobody_gets_its_ids_groups_and_a_clean_start(
        agent_factory: Callable[..., Agent]) -> None:
    """The account switch (a fork that drops to the account, then execs): real, effective and
    saved ids are the account's, its groups only, no capabilities, stdin empty, its own
    session, SIGPIPE at its default."""
    a = agent_factory(**STRICT)
    nobody = pwd.getpwnam("nobody")
    groups = sorted(os.getgrouplist("nobody", nobody.pw_gid))
    script = ("grep -E '^(Uid|Gid|Groups|CapEff|CapPrm|SigIgn):' /proc/self/status; "
              "ps -o sid= -o pid= -p $$; cat")
    done, out, err = run(a, "ids@1", ["/bin/sh", "-c", script])
    assert done["state"] == "succeeded", (done, err)
    status = dict(line.split(":", 1) for line in out.splitlines()[:6])
    assert status["Uid"].split() == [str(nobody.pw_uid)] * 4, out
    assert status["Gid"].split() == [str(nobody.pw_gid)] * 4, out
    assert sorted(map(int, status["Groups"].split())) == groups, out
    assert int(status["CapEff"], 16) == int(status["CapPrm"], 16) == 0, out
    assert not int(status["SigIgn"], 16) & (1 << (13 - 1)), f"SIGPIPE ignored: {out}"
    sid, pid = out.splitlines()[6].split()
    assert sid == pid, f"not the leader of its own session: {out}"


def test_a_cwd_the_account_cannot_enter_fails_the_run_naming_it(
        agent_factory: Callable[..., Agent], tmp_path: Path) -> None:
    a = agent_factory(**STRICT)
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    mark = tmp_path / "ran"
    done, _, _ = run(a, "cwd@1", ["touch", str(mark)], cwd=str(private))
    assert done["state"] == "failed", done
    assert done["reason"] == f"cwd {private}: Permission denied", done
    assert not mark.exists()
