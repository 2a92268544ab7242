"""A real agent daemon running real commands: outcomes, output, duplicates, auth, bad orders,
timeouts, cancel, output cap, acknowledgement and listings."""

from __future__ import annotations

import json
import os
import pwd
from datetime import timedelta
from pathlib import Path

import psutil
import pytest
from harness import (
    TOKEN,
    Agent,
    order,
    raw,
    run_async,
    wait_file,
    wait_final,
    wait_for_async,
)

from scheduler.protocol import AgentError, StaleEpoch
from scheduler.times import utc_now

pytestmark = pytest.mark.integration


def test_success_and_failure_are_recorded_with_output(shared_agent: Agent) -> None:
    async def body() -> None:
        c = shared_agent.client()
        created, run = await c.dispatch(order(
            "ok@2026-01-01T00:00:00Z", ["sh", "-c", "echo hello; echo oops >&2"]))
        assert created and run["state"] == "running"
        done = await wait_final(c, "ok@2026-01-01T00:00:00Z")
        assert done["state"] == "succeeded" and done["exit_code"] == 0
        assert done["output"] == {"stdout": 6, "stderr": 5, "truncated": False,
                                  "dropped": {"stdout": 0, "stderr": 0}}
        assert done["finished_at"] >= done["started_at"]
        assert await c.output("ok@2026-01-01T00:00:00Z", 1) == "hello\n"
        assert await c.output("ok@2026-01-01T00:00:00Z", 1, "stderr") == "oops\n"

        await c.dispatch(order("bad@2026-01-01T00:00:00Z", ["sh", "-c", "exit 3"], job="bad"))
        failed = await wait_final(c, "bad@2026-01-01T00:00:00Z")
        assert failed["state"] == "failed" and failed["exit_code"] == 3
        assert failed["reason"] == "exit status 3"
        await c.close()

    run_async(body)


def test_env_cwd_and_a_clean_environment(shared_agent: Agent, tmp_path: Path) -> None:
    async def body() -> None:
        c = shared_agent.client()
        await c.dispatch(order("env@1", ["sh", "-c", "echo $GREETING; pwd; env"],
                               env={"GREETING": "bonjour"}, cwd=str(tmp_path)))
        assert (await wait_final(c, "env@1"))["state"] == "succeeded"
        lines = (await c.output("env@1", 1)).splitlines()
        assert lines[:2] == ["bonjour", str(tmp_path)]
        assert "HASCHED_RUN_ID=env@1" in lines
        # The agent's own environment (pytest's, here) does not leak into jobs.
        assert not any(line.startswith("PYTEST_CURRENT_TEST=") for line in lines)
        await c.close()

    assert "PYTEST_CURRENT_TEST" in os.environ
    run_async(body)


def test_unknown_user_and_missing_program_fail_with_a_reason(shared_agent: Agent) -> None:
    async def body() -> None:
        c = shared_agent.client()
        await c.dispatch(order("user@1", ["true"], user="no-such-user-hasched"))
        await c.dispatch(order("prog@1", ["/nonexistent/program"]))
        user = await wait_final(c, "user@1")
        prog = await wait_final(c, "prog@1")
        assert user["state"] == "failed" and "unknown user 'no-such-user-hasched'" in user["reason"]
        assert prog["state"] == "failed" and "cannot start '/nonexistent/program'" in prog["reason"]
        await c.close()

    run_async(body)


@pytest.mark.skipif(os.geteuid() != 0, reason="switching users needs root")
def test_run_as_another_user(shared_agent: Agent) -> None:
    async def body() -> None:
        c = shared_agent.client()
        await c.dispatch(order("as-nobody@1", ["sh", "-c", "id -un; echo $HOME; pwd"],
                               user="nobody"))
        done = await wait_final(c, "as-nobody@1")
        assert done["state"] == "succeeded", done
        name, home, cwd = (await c.output("as-nobody@1", 1)).splitlines()
        assert (name, cwd) == ("nobody", "/") and home == pwd.getpwnam("nobody").pw_dir
        await c.close()

    run_async(body)


def test_duplicate_dispatch_starts_nothing(shared_agent: Agent, tmp_path: Path) -> None:
    marks = tmp_path / "marks"
    cmd = ["sh", "-c", f'echo started >> "{marks}"; sleep 1']

    async def body() -> None:
        c = shared_agent.client()
        created, first = await c.dispatch(order("dup@1", cmd))
        assert created
        created, again = await c.dispatch(order("dup@1", cmd))  # while running
        assert not created and again["state"] == "running"
        assert again["started_at"] == first["started_at"]
        done = await wait_final(c, "dup@1")
        created, late = await c.dispatch(order("dup@1", cmd))  # after it finished
        assert not created and late == done
        # A different attempt of the same run is a new run.
        created, _ = await c.dispatch(order("dup@1", cmd, attempt=2))
        assert created
        await wait_final(c, "dup@1", 2)
        await c.close()

    run_async(body)
    assert marks.read_text() == "started\nstarted\n"  # attempt 1 once, attempt 2 once


def test_token_is_required_everywhere(shared_agent: Agent) -> None:
    body = json.dumps(order("tok@1", ["true"]).to_json()).encode()
    for token in (None, "wrong-token", ""):
        assert raw(shared_agent, "GET", "/v1/health", token=token) == (
            401, {"error": "missing or wrong bearer token"})
        status, _ = raw(shared_agent, "POST", "/v1/runs", body, token=token)
        assert status == 401
    status, answer = raw(shared_agent, "GET", "/v1/runs/tok%401/1")
    assert status == 404, "a refused dispatch must record nothing"
    status, health = raw(shared_agent, "GET", "/v1/health")
    assert status == 200 and health["name"] == "t1" and set(health) == {
        "name", "version", "epoch", "running", "cgroups"}
    log = shared_agent.log()
    assert "missing or wrong bearer token" in log  # refusals are logged...
    assert TOKEN not in log and "wrong-token" not in log  # ...tokens never


@pytest.mark.parametrize("body, message", [
    (b"{not json", "body: not valid JSON"),
    (b"[]", "body: must be a JSON object"),
    ({"command": []}, "field 'command': must be a non-empty list of strings"),
    ({"command": "echo hi"}, "field 'command': must be a non-empty list of strings"),
    ({"command": ["echo", 3]}, "field 'command': must be a non-empty list of strings"),
    ({"attempt": 0}, "field 'attempt': must be an integer from 1 to 9007199254740992"),
    ({"epoch": -1}, "field 'epoch': must be an integer from 0 to 9007199254740992"),
    ({"job": "bad job"}, "field 'job': must match"),
    ({"timeout": "1h"}, "field 'timeout': must be a number of seconds from 0 to"),
    ({"cwd": "relative/dir"}, "field 'cwd': must be an absolute path or null"),
    ({"env": {"A": 1}}, "field 'env': must be an object of string names to strings"),
    # Epochs and limits are bounded; 2^64 used to answer 500 and raise the epoch anyway.
    ({"epoch": 2**64}, "field 'epoch': must be an integer from 0 to 9007199254740992"),
    ({"epoch": 2**53 + 1}, "field 'epoch': must be an integer from 0 to 9007199254740992"),
    ({"timeout": 1e308}, "field 'timeout': must be a number of seconds from 0 to"),
    ({"memory_max": 1}, "field 'memory_max': must be an integer from 1048576 to"),
    ({"memory_max": "1G"}, "field 'memory_max': must be an integer from 1048576 to"),
    ({"cpu_weight": 0}, "field 'cpu_weight': must be an integer from 1 to 10000"),
    ({"cpu_weight": 10001}, "field 'cpu_weight': must be an integer from 1 to 10000"),
    # A run id is a file name at the agent and a URL path segment at the scheduler.
    *[({"run_id": bad}, "field 'run_id': must be 1 to 256 characters")
      for bad in ("..", ".", "../x", "a/b", "a\\b", "a\x01b", "a\nb", "a b", ".hidden",
                  "", "x" * 257, 5)],
])
def test_bad_orders_are_refused_in_one_line(
    shared_agent: Agent, body: bytes | dict, message: str
) -> None:
    if isinstance(body, dict):
        # A valid order with one field spoiled, and a high epoch that must not be taken.
        good = order("badbody@1", ["true"], epoch=999).to_json()
        body = json.dumps(good | body).encode()
    status, answer = raw(shared_agent, "POST", "/v1/runs", body)
    assert status == 400
    assert answer["error"].startswith(message) and "\n" not in answer["error"]
    assert raw(shared_agent, "GET", "/v1/runs/badbody%401/1")[0] == 404
    assert raw(shared_agent, "GET", "/v1/health")[1]["epoch"] < 999


def test_timeout_sends_term_then_kill(shared_agent: Agent, tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    # Ignores TERM (only notes it), so only KILL can end it.
    script = f'echo $$ > "{pidfile}"; trap "echo got TERM" TERM; while :; do sleep 0.1; done'

    async def body() -> None:
        c = shared_agent.client()
        await c.dispatch(order("slow@1", ["sh", "-c", script], timeout=1))
        done = await wait_final(c, "slow@1")
        assert done["state"] == "timed-out", done
        assert done["reason"] == "timed out after 1s"
        assert "got TERM" in await c.output("slow@1", 1)
        await c.close()

    run_async(body)
    assert not psutil.pid_exists(int(wait_file(pidfile)))


def test_cancel_stops_the_run(shared_agent: Agent) -> None:
    async def body() -> None:
        c = shared_agent.client()
        await c.dispatch(order("cancel@1", ["sleep", "120"], epoch=1))
        with pytest.raises(StaleEpoch):
            await c.cancel("cancel@1", 1, epoch=0)
        with pytest.raises(AgentError) as e:
            await c.cancel("nope@1", 1, epoch=1)
        assert e.value.status == 404

        async def job_started() -> bool:
            return (await c.run("cancel@1", 1))["pid"] is not None

        await wait_for_async("the job process to start", job_started)
        run = await c.cancel("cancel@1", 1, epoch=1)
        assert run["run_id"] == "cancel@1"
        done = await wait_final(c, "cancel@1")
        assert done["state"] == "cancelled" and done["reason"] == "cancelled"
        assert not psutil.pid_exists(done["pid"])

        # A cancel right on the heels of the dispatch, before the job may have started.
        await c.dispatch(order("cancel-early@1", ["sleep", "120"], epoch=1))
        await c.cancel("cancel-early@1", 1, epoch=1)
        early = await wait_final(c, "cancel-early@1")
        assert early["state"] == "cancelled", early
        await c.close()

    run_async(body)


def test_output_over_the_limit_is_truncated(shared_agent: Agent) -> None:
    # shared_agent has output_limit = 4KiB
    async def body() -> None:
        c = shared_agent.client()
        await c.dispatch(order("big@1", ["sh", "-c", "head -c 100000 /dev/zero | tr '\\0' x"]))
        done = await wait_final(c, "big@1")
        assert done["state"] == "succeeded"
        assert done["output"]["truncated"] is True
        assert done["output"]["stdout"] == 4096
        assert await c.output("big@1", 1) == "x" * 4096
        await c.close()

    run_async(body)
    rundirs = list((shared_agent.state_dir / "output").glob("big@1.1"))
    assert len(rundirs) == 1 and (rundirs[0] / "stdout").stat().st_size <= 4096


def test_ack_and_listings(shared_agent: Agent) -> None:
    async def body() -> None:
        c = shared_agent.client()
        before = utc_now() - timedelta(seconds=1)
        await c.dispatch(order("list-a@1", ["true"], epoch=2))
        await c.dispatch(order("list-b@1", ["sleep", "120"], epoch=2))
        await wait_final(c, "list-a@1")
        unacked = {r["run_id"] for r in await c.runs(unacked=True)}
        assert {"list-a@1", "list-b@1"} <= unacked  # running ones are listed too

        with pytest.raises(StaleEpoch) as stale:
            await c.ack("list-a@1", 1, epoch=1)
        assert stale.value.agent_epoch >= 2
        with pytest.raises(AgentError) as running:
            await c.ack("list-b@1", 1, epoch=2)
        assert running.value.status == 409 and "still running" in str(running.value)

        await c.ack("list-a@1", 1, epoch=2)
        await c.ack("list-a@1", 1, epoch=2)  # twice is harmless
        unacked = {r["run_id"] for r in await c.runs(unacked=True)}
        assert "list-a@1" not in unacked and "list-b@1" in unacked

        since = {r["run_id"]: r for r in await c.runs(since=before)}
        assert since["list-a@1"]["acked"] is True and since["list-b@1"]["acked"] is False
        assert await c.runs(since=utc_now() + timedelta(hours=1)) == []
        # acknowledged, yet still recognised: no second start
        created, run = await c.dispatch(order("list-a@1", ["true"], epoch=2))
        assert not created and run["acked"] is True
        await c.cancel("list-b@1", 1, epoch=2)
        await wait_final(c, "list-b@1")
        await c.close()

    run_async(body)
