"""The OCF agent's promotion scores and positions from the daemon's replication state (PAF's
model), with crm_attribute, attrd_updater, crm_node, `hasched ctl` and the control socket faked
(tests/unit/crmfakes.py): no Pacemaker, no daemon."""

from __future__ import annotations

import sys

import pytest
from crmfakes import AGENT, FakeNode, replication, standby_status

pytestmark = pytest.mark.unit

sys.path.insert(0, str(AGENT.parents[1]))  # promotion.py and ocfagent.py, as installed beside it

import promotion  # noqa: E402
from promotion import Position  # noqa: E402

RECURRING = {"interval": "10000"}
PROBE = {"interval": "0"}


@pytest.fixture
def node(tmp_path):
    made: list[FakeNode] = []

    def make(status: dict, **kw) -> FakeNode:
        fake = FakeNode(tmp_path, status, **kw)
        fake.start_daemon()
        made.append(fake)
        return fake

    yield make
    for fake in made:
        fake.stop_daemon()


# -- the pure parts ------------------------------------------------------------------------------

@pytest.mark.parametrize("status,score", [
    ({"role": "active", "replication": replication("primary", 9)}, 105),
    ({"role": "active", "replication": replication("alone", 9)}, 105),
    (standby_status("in-sync"), 100),
    (standby_status("lagging"), 10),
    (standby_status("never"), 1),
    (standby_status("resyncing"), 1),  # a state this agent does not know: as never
    ({"role": "standby", "replication": replication("primary", 9)}, 1),  # demoted, not updated
    ({"role": "active"}, 10),  # an older daemon: the scores as before replication
    ({"role": "standby"}, 5),
    ({"role": "active", "replication": {"mode": "off", "state": "primary"}}, 10),
    ({"role": "standby", "replication": {"mode": "off", "state": "never"}}, 5),
], ids=["primary", "alone", "in-sync", "lagging", "never", "unknown state", "standby says primary",
        "old daemon active", "old daemon standby", "off active", "off standby"])
def test_score_of_status(status, score):
    assert promotion.score_of(status) == score


def test_positions_order_by_epoch_then_seq_on_one_lineage_only():
    base = Position("L", 5, 100)
    assert Position("L", 5, 101).ahead_of(base)
    assert Position("L", 6, 90).ahead_of(base)  # the newer term's history wins over a tail
    assert not Position("L", 4, 500).ahead_of(base)  # a diverged tail of an older term
    assert not Position("L", 5, 100).ahead_of(base)
    assert not Position("M", 9, 900).ahead_of(base)  # another lineage is not comparable
    assert Position.parse(str(base)) == base
    for bad in ("", "L:5", "L:x:1", ":5:1", "None:None:None", "L:5:1:2"):
        assert Position.parse(bad) is None, bad
    assert Position.of({"role": "standby"}) is None
    assert Position.of(standby_status(seq=7)) == Position("a1b2", 3, 7)


# -- monitor, start, stop: the scores and positions recorded --------------------------------------

@pytest.mark.parametrize("state,score", [("in-sync", 100), ("lagging", 10), ("never", 1)])
def test_monitor_of_a_standby_sets_its_score_and_position(node, state, score):
    fake = node(standby_status(state, seq=42))
    done = fake.run("monitor", **RECURRING)
    assert done.returncode == 0, done.stderr
    state_now = fake.read()
    assert state_now["scores"] == {"node1": str(score)}
    assert state_now["attrs"]["hasched-position-jobs"] == {"node1": "a1b2:3:42"}
    # private to attrd: never written to the CIB, so the moving position costs no transition
    assert any(c.startswith("attrd_updater --private -n hasched-position-jobs -U")
               for c in fake.calls())


def test_monitor_follows_the_state_as_it_changes(node):
    fake = node(standby_status("in-sync", seq=10))
    assert fake.run("monitor", **RECURRING).returncode == 0
    fake.set_status(replication=replication("lagging", 12))
    assert fake.run("monitor", **RECURRING).returncode == 0
    assert fake.read()["scores"]["node1"] == "10"
    assert fake.read()["attrs"]["hasched-position-jobs"]["node1"] == "a1b2:3:12"


def test_monitor_of_the_active_keeps_it_promoted(node):
    fake = node({"role": "active", "epoch": 3, "replication": replication("alone", 77)})
    assert fake.run("monitor", **RECURRING).returncode == 8
    assert fake.read()["scores"] == {"node1": "105"}
    assert fake.read()["attrs"]["hasched-position-jobs"] == {"node1": "a1b2:3:77"}


@pytest.mark.parametrize("status", [{"role": "standby", "epoch": 3},
                                    {"role": "standby", "epoch": 3,
                                     "replication": {"mode": "off"}}],
                         ids=["no replication object", "mode off"])
def test_without_replication_the_agent_behaves_as_before(node, status):
    fake = node(status)
    assert fake.run("monitor", **RECURRING).returncode == 0
    assert fake.read()["scores"] == {}  # recurring monitors left the score alone
    assert fake.run("monitor", **PROBE).returncode == 0
    assert fake.read()["scores"] == {"node1": "5"}
    assert fake.run("promote").returncode == 0
    assert fake.read()["scores"] == {"node1": "10"}
    assert not any(c.startswith("attrd_updater") for c in fake.calls())
    fake.stop_daemon()
    assert fake.run("stop").returncode == 0
    assert fake.read()["scores"] == {}
    assert not [c for c in fake.calls() if c.startswith("attrd_updater") and " -Q " not in c]


def test_stop_removes_score_position_and_deferral(node):
    fake = node(standby_status("in-sync", seq=5))
    assert fake.run("monitor", **RECURRING).returncode == 0
    defer = fake.pidfile.with_name("scheduler.pid.defer")
    defer.write_text("node2\n")
    fake.stop_daemon()
    assert fake.run("stop").returncode == 0
    assert fake.read()["scores"] == {}
    assert fake.read()["attrs"]["hasched-position-jobs"] == {"node1": ""}
    assert not defer.exists()


# -- notify -----------------------------------------------------------------------------------

def test_pre_promote_notify_records_the_position_now(node):
    fake = node(standby_status("lagging", seq=60))
    done = fake.run("notify", notify_type="pre", notify_operation="promote")
    assert done.returncode == 0, done.stderr
    assert fake.read()["attrs"]["hasched-position-jobs"] == {"node1": "a1b2:3:60"}
    assert fake.read()["scores"] == {}  # a notify records the position, not the score


def test_other_notifications_record_nothing(node):
    fake = node(standby_status("lagging", seq=60))
    assert fake.run("notify", notify_type="post", notify_operation="start").returncode == 0
    assert "hasched-position-jobs" not in fake.read()["attrs"]


# -- promote ----------------------------------------------------------------------------------

def test_promote_of_the_freshest_standby_goes_ahead(node):
    fake = node(standby_status("in-sync", seq=100))
    fake.record("node2", "a1b2:3:100")  # equal is not fresher
    done = fake.run("promote")
    assert done.returncode == 0, done.stderr
    assert fake.read()["status"]["role"] == "active"
    assert fake.read()["scores"] == {"node1": "105"}


def test_promote_is_refused_when_a_member_is_fresher(node):
    fake = node(standby_status("in-sync", seq=100))
    fake.record("node2", "a1b2:3:130")
    done = fake.run("promote", timeout="3000")  # a short wait for this node to catch up
    assert done.returncode == 1, done.stderr
    reason = [ln for ln in done.stderr.splitlines() if ln.startswith("ocf-exit-reason:")]
    assert reason == ["ocf-exit-reason:not promoting this node: node2, a cluster member, holds a "
                      "fresher position on lineage a1b2 (epoch 3 seq 130; this node: epoch 3 "
                      "seq 100); lowered this node's promotion score to 0 so that Pacemaker "
                      "promotes node2"], done.stderr
    assert "not promoting this node: node2" in fake.log()
    assert fake.read()["status"]["role"] == "standby"
    assert fake.read()["scores"] == {"node1": "0"}
    assert "epoch" not in " ".join(fake.read()["config"])  # no epoch was spent


def test_the_deferral_holds_across_restart_and_monitor_then_ends(node):
    fake = node(standby_status("in-sync", seq=100))
    fake.record("node2", "a1b2:3:130")
    assert fake.run("promote", timeout="3000").returncode == 1
    assert fake.run("monitor", **RECURRING).returncode == 0
    assert fake.read()["scores"]["node1"] == "0", "the next monitor raised the score again"
    fake.record("node2", "a1b2:4:131")  # node2 was promoted and went on
    assert fake.run("notify", notify_type="post", notify_operation="promote").returncode == 0
    assert fake.run("monitor", **RECURRING).returncode == 0
    assert fake.read()["scores"]["node1"] == "100"


def test_the_deferral_ends_when_the_fresher_node_leaves(node):
    fake = node(standby_status("in-sync", seq=100))
    fake.record("node2", "a1b2:3:130")
    assert fake.run("promote", timeout="3000").returncode == 1
    fake.update(partition=["node1"])
    assert fake.run("monitor", **RECURRING).returncode == 0
    assert fake.read()["scores"]["node1"] == "100"
    assert fake.run("promote").returncode == 0


@pytest.mark.parametrize("peer,partition", [
    ("a1b2:3:130", ["node1"]),  # fresher, but no longer a cluster member
    ("ffff:9:999", ["node1", "node2"]),  # another lineage: not comparable
    ("a1b2:2:500", ["node1", "node2"]),  # a higher seq of an older term: a diverged tail
    ("", ["node1", "node2"]),  # cleared (its instance stopped)
], ids=["not a member", "other lineage", "older epoch", "cleared"])
def test_promote_ignores_positions_that_do_not_count(node, peer, partition):
    fake = node(standby_status("in-sync", seq=100), partition=tuple(partition))
    fake.record("node2", peer)
    done = fake.run("promote")
    assert done.returncode == 0, done.stderr
    assert fake.read()["status"]["role"] == "active"


def test_promote_waits_for_this_node_to_catch_up(node):
    """A switchover: the demoted node's last batch is still in flight to this one."""
    import threading

    fake = node(standby_status("in-sync", seq=100))
    fake.record("node2", "a1b2:3:101")
    timer = threading.Timer(1.0, lambda: fake.set_status(replication=replication("in-sync", 101)))
    timer.start()
    try:
        done = fake.run("promote", timeout="30000")
    finally:
        timer.cancel()
    assert done.returncode == 0, done.stderr
    assert fake.read()["status"]["role"] == "active"


def test_promote_of_the_only_node_never_synced_goes_ahead(node):
    fake = node(standby_status("never", seq=0), partition=("node1",))
    assert fake.run("monitor", **RECURRING).returncode == 0
    assert fake.read()["scores"] == {"node1": "1"}  # still promotable
    assert fake.run("promote").returncode == 0
    assert fake.read()["scores"] == {"node1": "105"}
