"""A newly active scheduler tells every agent its epoch before it dispatches anything, so an
agent refuses the cut-off predecessor's orders at once; an agent down during the promotion is
told when it is back. The agent's POST /v1/epoch refuses a lower epoch and bad bodies."""

from __future__ import annotations

import json
import subprocess
import urllib.error
import urllib.request

import pytest
from harness import TOKEN, Lab, dump, hasched, wait_for

from scheduler.protocol import AgentError, DispatchOrder, StaleEpoch

pytestmark = pytest.mark.integration


def order(epoch: int) -> DispatchOrder:
    return DispatchOrder(run_id="old-active@2026-01-01T00:00:00Z", job="old-active", attempt=1,
                         epoch=epoch, command=["/bin/true"])


def test_promote_pushes_epoch_to_reachable_agents_and_later_to_the_returning_one(
        lab: Lab) -> None:
    a1, a2, a3 = lab.agent("a1"), lab.agent("a2"), lab.agent("a3")
    assert [a.call("health")["epoch"] for a in (a1, a2, a3)] == [0, 0, 0]
    a3.proc.stop()  # down during the promotion
    s = lab.scheduler("s", role="standby")  # no jobs: nothing is ever dispatched
    answer = s.ctl({"op": "promote", "epoch": 7})
    assert answer["ok"] and answer["role"] == "active" and answer["epoch"] == 7, answer

    # Pushed during the promotion, before the promote answer: no polling needed.
    assert [a.call("health")["epoch"] for a in (a1, a2)] == [7, 7]
    for a in (a1, a2):
        with pytest.raises(StaleEpoch) as refused:
            a.call("dispatch", order(6))
        assert refused.value.agent_epoch == 7
        assert a.call("run", "old-active@2026-01-01T00:00:00Z", 1) is None  # nothing recorded

    a3.start()  # same port and state: it still holds epoch 0
    wait_for("agent a3 to be told epoch 7 once it is back",
             lambda: a3.call("health")["epoch"] == 7)
    with pytest.raises(StaleEpoch):
        a3.call("dispatch", order(6))
    assert s.status()["role"] == "active"
    assert s.ledger_rows() == [], dump(s.ledger_rows())


def test_promote_refused_by_an_agent_with_a_newer_epoch_stays_standby(lab: Lab) -> None:
    a1 = lab.agent("a1")
    s = lab.scheduler("s", role="standby")
    assert a1.call("raise_epoch", 9) == 9  # a newer scheduler has talked to it
    answer = s.ctl({"op": "promote", "epoch": 7})
    assert answer["ok"] is False and "epoch 9" in answer["error"], answer
    assert s.status()["role"] == "standby"
    assert a1.call("health")["epoch"] == 9


def test_raise_epoch_keeps_the_highest_and_refuses_a_lower_one(lab: Lab) -> None:
    a1 = lab.agent("a1")
    assert a1.call("raise_epoch", 4) == 4
    assert a1.call("raise_epoch", 4) == 4  # same again: fine
    with pytest.raises(StaleEpoch) as refused:
        a1.call("raise_epoch", 3)
    assert refused.value.agent_epoch == 4
    assert "stale epoch 3" in str(refused.value)
    assert a1.call("health")["epoch"] == 4
    a1.proc.stop()
    a1.start()
    assert a1.call("health")["epoch"] == 4  # durable across a restart


def post_epoch(url: str, body: bytes, token: str = TOKEN) -> tuple[int, dict[str, object]]:
    req = urllib.request.Request(url + "/v1/epoch", data=body, method="POST", headers={
        "Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


BAD_BODIES = [
    (b"{not json", "body: not valid JSON"),
    (b"[5]", "body: must be a JSON object"),
    (b"{}", "field 'epoch': must be an integer from 0 to 9007199254740992"),
    (b'{"epoch": -1}', "field 'epoch': must be an integer from 0 to 9007199254740992"),
    (b'{"epoch": "8"}', "field 'epoch': must be an integer from 0 to 9007199254740992"),
    (b'{"epoch": true}', "field 'epoch': must be an integer from 0 to 9007199254740992"),
    # Above the bound: 400, never 500, and the epoch in memory untouched.
    (b'{"epoch": 18446744073709551616}',
     "field 'epoch': must be an integer from 0 to 9007199254740992"),
    (b'{"epoch": 9223372036854775807}',
     "field 'epoch': must be an integer from 0 to 9007199254740992"),
    # In bounds, but a jump no promotion makes (+1 each): refused, not taken.
    (b'{"epoch": 1000001}', "field 'epoch': 1000001 is more than 1000000 above the highest"),
]


def test_epoch_bad_body_is_400_one_line_and_changes_nothing(lab: Lab) -> None:
    a1 = lab.agent("a1")
    for body, message in BAD_BODIES:
        status, answer = post_epoch(a1.url, body)
        assert status == 400, (body, answer)
        error = str(answer["error"])
        assert error.startswith(message) and "\n" not in error, (body, answer)
    assert a1.call("health")["epoch"] == 0


def test_epoch_needs_the_token(lab: Lab) -> None:
    a1 = lab.agent("a1")
    status, _ = post_epoch(a1.url, b'{"epoch": 5}', token="wrong")
    assert status == 401
    assert a1.call("health")["epoch"] == 0


def test_epoch_jumps_by_at_most_the_bound_and_an_admin_can_reset_it(lab: Lab) -> None:
    a1 = lab.agent("a1")
    assert a1.call("raise_epoch", 1_000_000) == 1_000_000  # a bound's step: taken
    status, answer = post_epoch(a1.url, b'{"epoch": 2000001}')
    assert status == 400 and "more than 1000000 above" in str(answer["error"])
    assert "refused epoch 2000001" in a1.proc.logtext()
    # A dispatch with such an epoch is refused the same way and records nothing.
    with pytest.raises(AgentError) as refused:
        a1.call("dispatch", order(2_000_001))
    assert refused.value.status == 400
    assert a1.call("run", "old-active@2026-01-01T00:00:00Z", 1) is None
    assert a1.call("health")["epoch"] == 1_000_000

    # The way back: reset-epoch, locally, with the agent stopped (refused while it runs).
    config = str(a1.dir / "agent.toml")
    running = subprocess.run(hasched("agent", "reset-epoch", "--config", config, "--epoch", "3"),
                             capture_output=True, text=True, timeout=60)
    assert running.returncode == 1 and "stop the agent first" in running.stderr
    a1.proc.stop()
    done = subprocess.run(hasched("agent", "reset-epoch", "--config", config, "--epoch", "3"),
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "epoch 1000000 -> 3" in done.stdout
    a1.start()
    assert a1.call("health")["epoch"] == 3
    with pytest.raises(StaleEpoch):
        a1.call("raise_epoch", 2)
