"""Promotion scores and positions as Pacemaker records them (real single-node Pacemaker, real
daemons): the clone instance on node1 is a standby that follows a source scheduler run by hand
beside it, and reports each replication state in turn; the score the agent set is read back with
crm_attribute, the position with attrd_updater.

These need the daemon's `replication` status (issue 9, branch repl): without it they fail at
the first wait, saying so.
"""

from __future__ import annotations

import json
import signal
import subprocess
import urllib.request

import psutil
import pytest

from .conftest import HASCHED, Setup, daemons_of, promotion_score, sh, wait_for

pytestmark = pytest.mark.ocf

RSC = "hasched-r"
CLONE = f"{RSC}-clone"
NODE = "node1"
SCORES = {"never": 1, "in-sync": 100, "lagging": 10}
REPLICATION_TOKEN = "ocf-replication-token-0123456789abcdef0123"


def with_replication(setup: Setup, peer: Setup) -> None:
    """[replication] in `setup`'s config, following (or serving) `peer`."""
    token = setup.root / "replication.token"
    token.write_text(REPLICATION_TOKEN + "\n")
    token.chmod(0o600)
    with setup.config.open("a") as f:
        f.write("\n[replication]\n"
                'mode = "sync"\n'
                f'peers = ["http://{peer.host}:{peer.port}"]\n'
                f'token_file = "{token}"\n'
                'sync_timeout = "2s"\n')


def with_job(setup: Setup) -> None:
    """A job to pause (an hourly one: it never runs here) and the agent its pool names, which
    nothing answers."""
    token = setup.root / "agent.token"
    token.write_text("ocf-agent-token-0123456789abcdef0123456789\n")
    token.chmod(0o600)
    with setup.config.open("a") as f:
        f.write('\n[agents.nowhere]\nurl = "http://127.0.0.1:9"\n'
                f'token_file = "{token}"\nlabels = ["linux"]\n')
    (setup.root / "jobs" / "tick.toml").write_text(
        '[job.tick]\ncommand = ["/bin/true"]\nevery = "1h"\npool = "linux"\n')


def replication(setup: Setup) -> dict:
    try:
        return setup.ask('{"op": "status"}').get("replication") or {}
    except OSError:
        return {}


def score() -> int | None:
    return promotion_score(RSC, NODE)


def position(node: str = NODE) -> str:
    done = sh("attrd_updater", "-Q", "-n", f"hasched-position-{RSC}", "-N", node)
    for word in done.stdout.split():
        if word.startswith("value="):
            return word.split("=", 1)[1].strip('"')
    return ""


def expected_position(rep: dict) -> str:
    return f"{rep['lineage']}:{rep['epoch']}:{rep['seq']}"


def start_source(source: Setup) -> subprocess.Popen:
    """A scheduler outside Pacemaker, made active: the one the clone instance follows."""
    log = open(source.root / "source.log", "ab")
    proc = subprocess.Popen([HASCHED, "scheduler", "run", "--config", str(source.config),
                             "--role", "standby"], stdin=subprocess.DEVNULL, stdout=log,
                            stderr=log, start_new_session=True)
    log.close()
    wait_for("the source's control socket", lambda: source.socket.exists(), timeout=60)
    answer = source.ask('{"op": "promote", "epoch": 5}')
    assert answer.get("ok") and answer.get("role") == "active", answer
    return proc


def pause(source: Setup, job: str) -> None:
    """One write on the source (an API pause), so that the log holds an entry to replicate."""
    token = source.tokens.read_text().strip()
    req = urllib.request.Request(f"http://{source.host}:{source.port}/v1/jobs/{job}/pause",
                                 data=b"{}", method="POST",
                                 headers={"Authorization": f"Bearer {token}",
                                          "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as answer:
        assert json.load(answer)["paused"] is True


@pytest.fixture
def standby_clone(cluster):
    """The clone on node1 with replication, kept unpromoted by a -INFINITY rule on Promoted."""
    setup, source = Setup(instance=RSC), Setup(instance="hasched-src")
    for s in (setup, source):
        with_job(s)
    with_replication(setup, source)
    with_replication(source, setup)
    params = [f"{k}={v}" for k, v in setup.params().items()]
    try:
        sh("pcs", "resource", "create", RSC, "ocf:hasched:scheduler", *params,
           "op", "monitor", "interval=2s", "timeout=20s", "role=Unpromoted",
           "monitor", "interval=3s", "timeout=20s", "role=Promoted",
           "promotable", "notify=true", "--disabled", check=True)
        sh("pcs", "constraint", "location", CLONE, "rule", "role=Promoted",
           "constraint-id=hasched-r-no-promotion", "score=-INFINITY", "#uname", "eq", NODE,
           check=True)
        sh("pcs", "resource", "enable", CLONE, check=True)
        wait_for("the clone instance running standby", lambda: (
            setup.socket.exists() and setup.ask('{"op": "status"}').get("role") == "standby"),
            timeout=180)
        yield setup, source
    finally:
        for proc in daemons_of(source.config):
            proc.send_signal(signal.SIGCONT)
        sh("pcs", "resource", "delete", RSC, "--force")
        wait_for(f"{RSC} stopped", lambda: not daemons_of(setup.config), timeout=180)
        sh("crm_attribute", "--type", "crm_config", "--name", f"hasched-epoch-{RSC}", "--delete")
        setup.cleanup()
        source.cleanup()


def wait_state(setup: Setup, state: str) -> dict:
    return wait_for(f"the standby to report replication state {state!r} (needs branch repl)",
                    lambda: (rep := replication(setup)).get("state") == state and rep,
                    timeout=120)


def test_the_recorded_score_follows_each_replication_state(standby_clone) -> None:
    setup, source = standby_clone
    # never: nothing to follow yet (the source is not running).
    rep = wait_state(setup, "never")
    wait_for("promotion score 1 (never synced)", lambda: score() == SCORES["never"], timeout=60)
    assert position() == expected_position(replication(setup)), rep

    # in sync: the source runs, writes, and the standby has applied everything.
    proc = start_source(source)
    pause(source, "tick")
    wait_state(setup, "in-sync")
    wait_for("promotion score 100 (in sync)", lambda: score() == SCORES["in-sync"], timeout=60)
    rep = replication(setup)
    assert rep["seq"] >= 1 and rep["lineage"] == replication(source)["lineage"], rep
    wait_for("the position of the in-sync standby recorded",
             lambda: position() == expected_position(replication(setup)), timeout=30)

    # lagging: the source stops answering (SIGSTOP) while the standby follows it.
    psutil.Process(proc.pid).send_signal(signal.SIGSTOP)
    try:
        wait_state(setup, "lagging")
        wait_for("promotion score 10 (lagging)", lambda: score() == SCORES["lagging"],
                 timeout=60)
    finally:
        psutil.Process(proc.pid).send_signal(signal.SIGCONT)
    wait_state(setup, "in-sync")
    wait_for("promotion score 100 again", lambda: score() == SCORES["in-sync"], timeout=60)


def test_promotion_ignores_a_fresher_node_that_is_not_a_member(standby_clone) -> None:
    """A position recorded for a node outside the partition never holds a promotion back; the
    promoted instance scores 105, and stop leaves neither score nor position behind."""
    setup, _ = standby_clone
    rep = wait_state(setup, "never")
    ghost = f"{rep['lineage']}:{rep['epoch'] + 10}:{rep['seq'] + 1000}"
    sh("attrd_updater", "--private", "-n", f"hasched-position-{RSC}", "-N", "ghost", "-U", ghost,
       check=True)
    wait_for("the ghost's position in attrd", lambda: position("ghost") == ghost, timeout=30)
    sh("pcs", "constraint", "delete", "hasched-r-no-promotion", check=True)
    wait_for("the instance promoted despite the ghost's position",
             lambda: setup.ask('{"op": "status"}').get("role") == "active", timeout=180)
    wait_for("promotion score 105 (active)", lambda: score() == 105, timeout=60)
    try:
        sh("pcs", "resource", "disable", CLONE, check=True)
        wait_for("the clone stopped", lambda: not daemons_of(setup.config), timeout=180)
        # The daemon is gone before the stop action ends: its last step clears score and
        # position, so wait for the action rather than read them at once.
        wait_for("the score removed by stop", lambda: score() is None, timeout=60)
        assert position() == ""
    finally:
        sh("attrd_updater", "-n", f"hasched-position-{RSC}", "-N", "ghost", "-D")
