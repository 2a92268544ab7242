"""Promotion of ocf:hasched:scheduler from the daemon's replication state (PAF's model).

Each instance sets its own promotion score from the `replication` object of its daemon's
`status` answer: the active 105 (kept promoted), a standby in sync 100, lagging 10, never synced
1 (still promotable when it is all there is). It records its position (lineage, epoch of its last
entry, seq) as the transient node attribute `hasched-position-<resource>`, private to attrd
(`attrd_updater --private`, as PAF keeps its `lsn_location`): never written to the CIB, so the
active's position, which moves at every monitor, costs no CIB write and no new transition.

A promotion compares positions once more, because the last monitors may be seconds old: the
pre-promote notify makes every instance record its position right then, and the instance about
to be promoted refuses when a cluster member holds a higher position on the same lineage. It
then lowers its own score to 0 and remembers whom it deferred to (a file beside the PID file),
so that neither its restart after the failed promote nor its next monitor raises the score
again while that node is still a member and still ahead: Pacemaker promotes the fresher node.

Without a `replication` object (an older daemon) or with mode "off", the scores are the ones
the agent always set (5 standby, 10 active) and no position is recorded. Standard library only.
"""

from __future__ import annotations

import os

import ocfagent as ocf

# Without replication: as before replication existed.
SCORE_STANDBY, SCORE_ACTIVE_LEGACY = 5, 10
# Just above an in-sync standby, so that a node coming back does not take the role back by
# itself (no failback unless asked for), and far enough below an in-sync standby plus the
# failback preference (hasched_failback_score, 200 by default: a location rule on the Promoted
# role) that `hasched_failback` still works. At 1000 it outweighed that preference and the
# role never failed back.
SCORE_ACTIVE = 105
# A standby by its replication state; any other state (unknown to this agent) counts as never.
STANDBY_SCORES = {"in-sync": 100, "lagging": 10, "never": 1}
SCORE_NEVER = STANDBY_SCORES["never"]
SCORE_DEFERRED = 0  # still promotable when nothing else is, below every running peer's score
ATTR_TIMEOUT = 10.0  # seconds for one crm_attribute / attrd_updater / crm_node call


class Position:
    """Where a node's ledger is: its lineage, and the epoch and seq of its last entry.

    Ordered like PostgreSQL's timeline#LSN: on one lineage a later epoch wins, then a higher seq.
    A node's entries after a fork carry an older epoch than the entries the new active wrote
    from there, so a diverged tail never looks fresher than the history that replaced it."""

    __slots__ = ("lineage", "epoch", "seq")

    def __init__(self, lineage: str, epoch: int, seq: int) -> None:
        self.lineage, self.epoch, self.seq = lineage, epoch, seq

    @classmethod
    def of(cls, status: dict) -> Position | None:
        """This node's position from its daemon's `status`; None without replication."""
        rep = replication(status)
        if rep is None:
            return None
        return cls.parse(f"{rep.get('lineage')}:{rep.get('epoch')}:{rep.get('seq')}")

    @classmethod
    def parse(cls, text: str) -> Position | None:
        """"<lineage>:<epoch>:<seq>", the attribute's value; None for anything else."""
        parts = text.strip().split(":")
        if len(parts) != 3 or not parts[0] or parts[0] == "None":
            return None
        try:
            return cls(parts[0], int(parts[1]), int(parts[2]))
        except ValueError:
            return None

    def ahead_of(self, other: Position) -> bool:
        return self.lineage == other.lineage and (self.epoch, self.seq) > (other.epoch, other.seq)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Position) and str(self) == str(other)

    def __str__(self) -> str:
        return f"{self.lineage}:{self.epoch}:{self.seq}"

    __repr__ = __str__


def replication(status: dict) -> dict | None:
    """The status' replication object when replication is on, else None (behave as before)."""
    rep = status.get("replication")
    if not isinstance(rep, dict) or rep.get("mode") in (None, "off"):
        return None
    return rep


def score_of(status: dict) -> int:
    """The promotion score this instance's daemon earns by its status."""
    rep = replication(status)
    if status.get("role") == "active":
        return SCORE_ACTIVE if rep else SCORE_ACTIVE_LEGACY
    if rep is None:
        return SCORE_STANDBY
    return STANDBY_SCORES.get(str(rep.get("state")), SCORE_NEVER)


# -- the cluster's side: crm_attribute, attrd_updater, crm_node --------------------------------

def position_attribute() -> str:
    return f"hasched-position-{ocf.resource_name()}"


def set_score(score: int | None) -> None:
    """Pacemaker promotes the instance with the highest score; None removes it (stop)."""
    args = ["-D"] if score is None else ["-v", str(score)]
    rc, out = ocf.run_command(["crm_attribute", "--promotion", *args], ATTR_TIMEOUT)
    if rc != 0:
        ocf.log("warning", f"crm_attribute --promotion {' '.join(args)} failed: {out}")


def record_position(position: Position | None, wait: float = 0.0) -> None:
    """Record this node's position in attrd (None: clear it). With `wait`, poll until attrd
    answers the new value: attrd applies updates asynchronously, and the promote that follows a
    pre-promote notify must read what each node recorded (PAF waits for attrd's ack likewise)."""
    name = position_attribute()
    args = ["-D"] if position is None else ["-U", str(position)]
    rc, out = ocf.run_command(["attrd_updater", "--private", "-n", name, *args], ATTR_TIMEOUT)
    if rc != 0:
        ocf.log("warning", f"attrd_updater -n {name} {args[0]} failed: {out}")
        return
    if position is None or wait <= 0:
        return
    import time

    deadline, me = time.monotonic() + wait, node_name()
    while positions(me).get(me) != position:
        if time.monotonic() >= deadline:
            ocf.log("warning", f"attrd does not answer {name}={position} yet")
            return
        time.sleep(0.1)


def positions(node: str | None = None) -> dict[str, Position]:
    """The recorded positions by node (of `node` alone, or of every node); {} when attrd does not
    answer. attrd_updater prints one `name="N" host="H" value="V"` line per node."""
    import shlex

    argv = ["attrd_updater", "-Q", "-n", position_attribute()]
    argv += ["-N", node] if node else ["-A"]
    rc, out = ocf.run_command(argv, ATTR_TIMEOUT)
    found: dict[str, Position] = {}
    if rc != 0:
        return found
    for line in out.splitlines():
        fields = dict(w.split("=", 1) for w in shlex.split(line) if "=" in w)
        position = Position.parse(fields.get("value", ""))
        if fields.get("host") and position is not None:
            found[fields["host"]] = position
    return found


def node_name() -> str:
    """This node's name as the cluster knows it (Pacemaker passes it to every action)."""
    name = ocf.meta("on_node")
    if not name:
        rc, out = ocf.run_command(["crm_node", "-n"], ATTR_TIMEOUT)
        name = out if rc == 0 else os.uname().nodename
    return name


def members() -> set[str] | None:
    """The nodes of this node's cluster partition; None when crm_node cannot tell."""
    rc, out = ocf.run_command(["crm_node", "-p"], ATTR_TIMEOUT)
    return set(out.split()) if rc == 0 else None


# -- decisions ---------------------------------------------------------------------------------

def fresher_peer(mine: Position) -> tuple[str, Position] | None:
    """The cluster member other than this node with the highest recorded position ahead of
    `mine` on its lineage, or None. A node that left the partition does not count, whatever it
    recorded; when crm_node cannot say who is a member, every recorded node counts."""
    me, partition = node_name(), members()
    best: tuple[str, Position] | None = None
    for node, theirs in sorted(positions().items()):
        if node == me or (partition is not None and node not in partition):
            continue
        if theirs.ahead_of(mine) and (best is None or theirs.ahead_of(best[1])):
            best = (node, theirs)
    return best


def blocker(mine: Position, current, wait: float) -> tuple[str, Position, Position] | None:
    """(node, its position, ours) when a fresher member keeps this node from being promoted.

    `current()` re-reads this node's position: a follower may still be applying the last
    entries (a switchover, where the demoted node's last batch is in flight), so it gets up to
    `wait` seconds to catch up before the promotion is refused."""
    import time

    deadline = time.monotonic() + wait
    found = fresher_peer(mine)
    while found is not None and time.monotonic() < deadline:
        time.sleep(0.5)
        mine = current() or mine
        found = fresher_peer(mine)
    return None if found is None else (*found, mine)


def deferred_to(defer_file: str, mine: Position | None) -> str | None:
    """The node this one deferred its promotion to, while that still holds: the node is still a
    member and still ahead of `mine`. Forgets the deferral (removes the file) otherwise."""
    try:
        with open(defer_file) as f:
            node = f.read().strip()
    except OSError:
        return None
    partition = members()
    theirs = positions(node).get(node) if node else None
    if (mine is not None and theirs is not None and theirs.ahead_of(mine)
            and (partition is None or node in partition)):
        return node
    forget_deferral(defer_file)
    return None


def defer(defer_file: str, node: str) -> None:
    """Lower this instance's score below any running peer's and remember in favour of whom."""
    set_score(SCORE_DEFERRED)
    try:
        fd = os.open(defer_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(node + "\n")
    except OSError as e:
        ocf.log("warning", f"cannot record the deferral to {node} in {defer_file}: {e}")


def forget_deferral(defer_file: str) -> None:
    try:
        os.unlink(defer_file)
    except FileNotFoundError:
        pass


def publish(status: dict, defer_file: str, *, legacy: bool) -> None:
    """Set this instance's score, and with replication its position, from its daemon's status.

    With replication every call sets them (monitor included: the score follows the state).
    Without, the score is set only when `legacy` is true (start, probe, promote, demote), as the
    agent always did. A standby that deferred to a fresher node keeps SCORE_DEFERRED while the
    deferral holds; an active one forgets any deferral."""
    position = Position.of(status)
    if position is None:
        if legacy:
            set_score(score_of(status))
        return
    score = score_of(status)
    if status.get("role") == "active":
        forget_deferral(defer_file)
    elif deferred_to(defer_file, position) is not None:
        score = SCORE_DEFERRED
    set_score(score)
    record_position(position)


def clear(defer_file: str) -> None:
    """stop: no score, no position, no deferral left behind. The position is cleared only when
    there is one: without replication no attribute is ever made."""
    set_score(None)
    me = node_name()
    if me in positions(me):
        record_position(None)
    forget_deferral(defer_file)
