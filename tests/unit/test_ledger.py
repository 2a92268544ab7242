"""The ledger's write path: a Change carries every value it sets."""

from __future__ import annotations

import time
from pathlib import Path

from scheduler.ledger import Change, Ledger


def _row(ledger: Ledger, run_id: str) -> dict:
    row = ledger.get_attempt(run_id, 1)
    assert row is not None
    return row if isinstance(row, dict) else row.to_dict()


def test_the_same_changes_on_two_ledgers_give_the_same_rows(tmp_path: Path) -> None:
    """What a standby following the active relies on: applying a change later, elsewhere,
    decides nothing of its own (scheduled_at was filled in by apply, from its own clock)."""
    changes = [
        Change("create", "j@2026-01-01T00:00:00Z", 1, "j",
               {"nominal": "2026-01-01T00:00:00Z", "agent": "a1"}),
        Change("adopt", "k@2026-01-01T00:00:00Z", 1, "k",
               {"nominal": "2026-01-01T00:00:00Z", "agent": "a1", "state": "running"}),
    ]
    first, second = Ledger(tmp_path / "a.sqlite"), Ledger(tmp_path / "b.sqlite")
    first.apply(changes)
    time.sleep(0.01)  # a clock read at apply would now differ
    second.apply(changes)
    for rid in ("j@2026-01-01T00:00:00Z", "k@2026-01-01T00:00:00Z"):
        assert _row(first, rid) == _row(second, rid)
        assert _row(first, rid)["scheduled_at"]


def test_an_adoption_keeps_when_the_ledger_first_knew_the_run(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "l.sqlite")
    rid = "j@2026-01-01T00:00:00Z"
    ledger.apply([Change("create", rid, 1, "j", {"nominal": "2026-01-01T00:00:00Z",
                                                  "scheduled_at": "2026-01-01T00:00:00.000000Z"})])
    assert ledger.apply([Change("adopt", rid, 1, "j", {
        "nominal": "2026-01-01T00:00:00Z", "agent": "a1", "state": "running"})]) == [True]
    row = _row(ledger, rid)
    assert (row["state"], row["scheduled_at"]) == ("running", "2026-01-01T00:00:00.000000Z")
