"""The ledger's change log: row images in the same transaction as each apply, replayable on a
second ledger; seq, epoch, terms, lineage, trim; the fork point of two histories."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from scheduler.changelog import Entry, Image
from scheduler.ledger import Change, Ledger
from scheduler.replication.fork import fork_point

RID = "j@2026-01-01T00:00:00Z"


def _dump(path: Path) -> dict[str, list[tuple]]:
    conn = sqlite3.connect(path)
    try:
        return {t: sorted(conn.execute(f"SELECT * FROM {t}").fetchall())
                for t in ("runs", "job_state")} | {
            "meta": sorted(conn.execute("SELECT * FROM meta WHERE key NOT IN "
                                        "('lineage', 'trimmed')").fetchall())}
    finally:
        conn.close()


def _history(ledger: Ledger) -> None:
    ledger.apply([Change("job", job="j", fields={"first_seen": "2026-01-01T00:00:00Z"})])
    ledger.apply([Change("create", RID, 1, "j", {"nominal": "2026-01-01T00:00:00Z"}),
                  Change("create", "k@1", 1, "k", {"nominal": "2026-01-01T00:00:00Z"})])
    ledger.apply([Change("update", RID, 1, fields={"state": "dispatched"}, when=("scheduled",))])
    ledger.apply([Change("update", RID, 1, fields={"state": "failed"}, when=("scheduled",))])
    ledger.raise_epoch(3)
    ledger.apply([Change("job", job="j", fields={"paused": True})])
    ledger.apply([Change("delete", "k@1", 1)])


def test_the_same_stream_on_a_second_ledger_gives_identical_rows(tmp_path: Path) -> None:
    active, follower = Ledger(tmp_path / "a.sqlite"), Ledger(tmp_path / "b.sqlite")
    _history(active)
    entries = active.entries(0, 1000)
    # One entry per apply that changed something: the refused update wrote none.
    assert [e.seq for e in entries] == [1, 2, 3, 4, 5, 6]
    assert follower.append(entries[:2]) == 2
    assert follower.append(entries[2:]) == 6
    assert _dump(tmp_path / "a.sqlite") == _dump(tmp_path / "b.sqlite")
    assert follower.paused_jobs() == {"j"} and follower.get_run("k@1") is None
    assert follower.epoch() == 3
    assert follower.terms() == active.terms() == ((0, 1), (3, 4))
    assert follower.position().seq == active.position().seq == 6
    assert follower.position().epoch == 3
    assert follower.position().lineage != active.position().lineage  # each its own until a resync


def test_a_row_image_is_the_row_after_the_change(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "a.sqlite")
    _history(ledger)
    third = ledger.entries(2, 1)[0]
    (image,) = third.images
    assert image.table == "runs" and image.row is not None
    assert image.row["state"] == "dispatched" and image.row["run_id"] == RID
    last = ledger.entries(5, 1)[0]
    assert last.images == (Image("runs", ("k@1", 1), None),)
    assert Entry.from_json(last.to_json()) == last


def test_an_entry_that_does_not_follow_the_head_is_refused(tmp_path: Path) -> None:
    active, follower = Ledger(tmp_path / "a.sqlite"), Ledger(tmp_path / "b.sqlite")
    _history(active)
    with pytest.raises(ValueError, match="does not follow"):
        follower.append(active.entries(1, 10))
    assert follower.position().seq == 0 and follower.get_run(RID) is None  # nothing of it stayed


def test_a_snapshot_carries_rows_log_and_lineage(tmp_path: Path) -> None:
    active, follower = Ledger(tmp_path / "a.sqlite"), Ledger(tmp_path / "b.sqlite")
    _history(active)
    pos = active.snapshot(tmp_path / "snap.sqlite")
    assert pos == active.position()
    assert follower.restore(tmp_path / "snap.sqlite") == pos
    assert follower.head == 6 and follower.paused_jobs() == {"j"}
    active.apply([Change("job", job="j", fields={"paused": False})])
    follower.append(active.entries(follower.head, 10))
    assert follower.paused_jobs() == set()


def test_trim_keeps_the_head_and_says_where_the_log_begins(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "a.sqlite")
    _history(ledger)
    assert ledger.trim("2000-01-01T00:00:00Z", keep=2) == 4
    assert ledger.trim_point() == 4
    assert [e.seq for e in ledger.entries(0, 10)] == [5, 6]
    assert ledger.position().seq == 6


def test_the_fork_of_two_histories() -> None:
    # A wrote epoch 1 up to 100; B followed to 90 and was promoted at epoch 2 (from 91).
    a, b = ((0, 1), (1, 5)), ((0, 1), (1, 5), (2, 91))
    assert fork_point(a, 100, b, 130) == 90
    assert fork_point(b, 130, a, 100) == 90
    # A follower behind, nothing diverged: the fork is its own head.
    assert fork_point(a, 60, a, 100) == 60
    # A came back at epoch 3 without following B: its epoch-3 tail is its own.
    assert fork_point(((0, 1), (1, 5), (3, 101)), 120, b, 130) == 90
    # Nothing in common.
    assert fork_point(((4, 1),), 10, b, 130) == 0
