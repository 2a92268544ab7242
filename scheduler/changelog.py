"""The ledger's durable change log: what a standby follows (docs/interfaces.md, Replication).

Each `Ledger.apply` that changed something writes, in the SAME transaction, one entry: its
sequence number, the epoch it was written under, when, and the ROW IMAGES of what it changed
(the rows as they are after the change, read back by primary key, or a deletion). Applying an
image is an upsert or a delete, so it decides nothing and is idempotent: a follower applying the
same entries gets the same rows. Images are generic per table: a new table only has to be named
in TABLE_KEYS with its primary key.

`terms` records the seq at which each epoch's writes began (PostgreSQL's timeline history):
two nodes' logs agree up to a fork point computable from their terms and heads
(scheduler/replication/fork.py).
"""

from __future__ import annotations

import json
import secrets
import sqlite3
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS changes (
    seq INTEGER PRIMARY KEY, epoch INTEGER NOT NULL, at TEXT NOT NULL, images TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS terms (epoch INTEGER PRIMARY KEY, first_seq INTEGER NOT NULL);
"""

# The replicated tables and their primary keys. A table added later (an audit table, say) is
# replicated once it is named here and its changes name it (Target).
TABLE_KEYS: dict[str, tuple[str, ...]] = {
    "runs": ("run_id", "attempt"),
    "job_state": ("job",),
    "meta": ("key",),
    "audit": ("id",),
}
# meta rows that are this node's own, never shipped nor overwritten by a follower.
LOCAL_META = frozenset({"lineage", "trimmed"})


def keys_of(table: str) -> tuple[str, ...]:
    """The primary key columns of a replicated table; a shipped image naming another table is
    refused (ValueError), not applied."""
    keys = TABLE_KEYS.get(table)
    if keys is None:
        raise ValueError(f"change log: unknown table {table!r}")
    return keys


@dataclass(frozen=True)
class Target:
    """The row a change touched: its table and primary key values."""

    table: str
    key: tuple[Any, ...]


@dataclass(frozen=True)
class Image:
    """A row as it is after a change (`row`), or its deletion (`row` None)."""

    table: str
    key: tuple[Any, ...]
    row: dict[str, Any] | None

    def to_json(self) -> dict[str, Any]:
        if self.row is None:
            return {"t": self.table, "del": list(self.key)}
        return {"t": self.table, "row": self.row}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Image:
        table = data["t"]
        keys = keys_of(table)
        if "del" in data:
            return cls(table, tuple(data["del"]), None)
        row = dict(data["row"])
        return cls(table, tuple(row[k] for k in keys), row)


@dataclass(frozen=True)
class Entry:
    """One log entry: what one `Ledger.apply` changed."""

    seq: int
    epoch: int
    at: str
    images: tuple[Image, ...]

    def to_json(self) -> dict[str, Any]:
        return {"seq": self.seq, "epoch": self.epoch, "at": self.at,
                "images": [i.to_json() for i in self.images]}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Entry:
        return cls(int(data["seq"]), int(data["epoch"]), str(data["at"]),
                   tuple(Image.from_json(i) for i in data["images"]))


@dataclass(frozen=True)
class RawEntry:
    """An entry as stored and shipped: its images still JSON text (a follower applies them and
    stores the same text; nobody decodes and re-encodes them on the way)."""

    seq: int
    epoch: int
    at: str
    images: str

    def to_wire(self) -> list[Any]:
        return [self.seq, self.epoch, self.at, self.images]

    @classmethod
    def from_wire(cls, data: list[Any]) -> RawEntry:
        seq, epoch, at, images = data
        return cls(int(seq), int(epoch), str(at), str(images))

    @classmethod
    def of(cls, entry: Entry) -> RawEntry:
        return cls(entry.seq, entry.epoch, entry.at,
                   json.dumps([i.to_json() for i in entry.images], separators=(",", ":")))

    def decoded(self) -> Entry:
        return Entry(self.seq, self.epoch, self.at,
                     tuple(Image.from_json(i) for i in json.loads(self.images)))


@dataclass(frozen=True)
class Position:
    """Where a ledger's log stands: its lineage, last seq, and the epoch of that entry."""

    lineage: str
    seq: int
    epoch: int

    def to_json(self) -> dict[str, Any]:
        return {"lineage": self.lineage, "seq": self.seq, "epoch": self.epoch}


Terms = tuple[tuple[int, int], ...]  # (epoch, first_seq), by epoch


def init(c: sqlite3.Connection) -> None:
    """The log's tables and this ledger's lineage (made once, when the ledger is created)."""
    c.executescript(SCHEMA)
    c.execute("INSERT OR IGNORE INTO meta (key, value) VALUES ('lineage', ?)",
              (secrets.token_hex(8),))


def _read_row(c: sqlite3.Connection, target: Target) -> dict[str, Any] | None:
    keys = TABLE_KEYS[target.table]
    where = " AND ".join(f"{k} = ?" for k in keys)
    cur = c.execute(f"SELECT * FROM {target.table} WHERE {where}", target.key)
    row = cur.fetchone()
    if row is None:
        return None
    return dict(zip([d[0] for d in cur.description], row, strict=True))


def head(c: sqlite3.Connection) -> int:
    row = c.execute("SELECT MAX(seq) FROM changes").fetchone()
    if row[0] is not None:
        return int(row[0])
    trimmed = c.execute("SELECT value FROM meta WHERE key = 'trimmed'").fetchone()
    return int(trimmed[0]) if trimmed else 0


def _epoch(c: sqlite3.Connection) -> int:
    return int(c.execute("SELECT value FROM meta WHERE key = 'epoch'").fetchone()[0])


def _note_term(c: sqlite3.Connection, epoch: int, seq: int) -> None:
    c.execute("INSERT OR IGNORE INTO terms (epoch, first_seq) VALUES (?, ?)", (epoch, seq))


def record(c: sqlite3.Connection, targets: Iterable[Target], at: str) -> int:
    """Write the entry for what this transaction changed (inside it); its seq."""
    seen: dict[Target, None] = dict.fromkeys(targets)  # in order, once each
    images = [Image(t.table, t.key, _read_row(c, t)) for t in seen]
    seq = head(c) + 1
    epoch = _epoch(c)
    c.execute("INSERT INTO changes (seq, epoch, at, images) VALUES (?, ?, ?, ?)",
              (seq, epoch, at, json.dumps([i.to_json() for i in images],
                                          separators=(",", ":"))))
    _note_term(c, epoch, seq)
    return seq


Deleted = Callable[[str, dict[str, Any]], None]  # (table, the row as it was)


class _Applier:
    """Applies shipped images in order, with one executemany per run of rows of the same table
    and columns (a deletion first applies what is pending, so the order per row holds)."""

    def __init__(self, c: sqlite3.Connection, deleted: Deleted | None) -> None:
        self.c, self.deleted = c, deleted
        self.pending: dict[tuple[str, tuple[str, ...]], list[tuple[Any, ...]]] = {}

    def image(self, image: dict[str, Any]) -> None:
        table = image["t"]
        keys = keys_of(table)
        if "del" in image:
            self.flush()
            self._delete(table, keys, image["del"])
            return
        row = image["row"]
        if table == "meta" and row.get("key") in LOCAL_META:
            return
        self.pending.setdefault((table, tuple(row)), []).append(tuple(row.values()))

    def _delete(self, table: str, keys: tuple[str, ...], key: list[Any]) -> None:
        where = " AND ".join(f"{k} = ?" for k in keys)
        if self.deleted is not None:
            cur = self.c.execute(f"SELECT * FROM {table} WHERE {where}", key)
            old = cur.fetchone()
            if old is not None:
                self.deleted(table, dict(zip([d[0] for d in cur.description], old, strict=True)))
        self.c.execute(f"DELETE FROM {table} WHERE {where}", key)

    def flush(self) -> None:
        for (table, cols), rows in self.pending.items():
            # An upsert, not INSERT OR REPLACE: an existing row is updated in place, so only
            # the indexes of columns that changed are touched (REPLACE deletes and reinserts).
            keys = TABLE_KEYS[table]
            sets = ", ".join(f"{k} = excluded.{k}" for k in cols if k not in keys)
            self.c.executemany(f"INSERT INTO {table} ({', '.join(cols)}) "
                               f"VALUES ({', '.join('?' * len(cols))}) ON CONFLICT "
                               f"({', '.join(keys)}) DO "
                               + (f"UPDATE SET {sets}" if sets else "NOTHING"), rows)
        self.pending = {}


def append(c: sqlite3.Connection, entries: Sequence[RawEntry],
           deleted: Deleted | None = None) -> tuple[int, list[list[dict[str, Any]]]]:
    """A follower's side (inside a transaction): apply entries that follow this log's head
    directly, keeping their seq and text; the new head and each entry's decoded images.
    `deleted(table, row)` hears of each row an image deletes, as it was."""
    last = head(c)
    decoded = []
    applier = _Applier(c, deleted)
    for e in entries:
        if e.seq != last + 1:
            raise ValueError(f"change log: entry {e.seq} does not follow {last}")
        images = json.loads(e.images)
        for image in images:
            applier.image(image)
        decoded.append(images)
        last = e.seq
    applier.flush()
    c.executemany("INSERT INTO changes (seq, epoch, at, images) VALUES (?, ?, ?, ?)",
                  [(e.seq, e.epoch, e.at, e.images) for e in entries])
    for epoch in dict.fromkeys(e.epoch for e in entries):
        _note_term(c, epoch, next(e.seq for e in entries if e.epoch == epoch))
    return last, decoded


def read(c: sqlite3.Connection, after: int, limit: int) -> list[RawEntry]:
    rows = c.execute("SELECT seq, epoch, at, images FROM changes WHERE seq > ? ORDER BY seq "
                     "LIMIT ?", (after, limit)).fetchall()
    return [RawEntry(int(r[0]), int(r[1]), r[2], r[3]) for r in rows]


def terms(c: sqlite3.Connection) -> Terms:
    return tuple((int(r[0]), int(r[1]))
                 for r in c.execute("SELECT epoch, first_seq FROM terms ORDER BY epoch"))


def position(c: sqlite3.Connection) -> Position:
    lineage = c.execute("SELECT value FROM meta WHERE key = 'lineage'").fetchone()[0]
    seq = head(c)
    row = c.execute("SELECT epoch FROM terms WHERE first_seq <= ? ORDER BY first_seq DESC "
                    "LIMIT 1", (seq,)).fetchone()
    return Position(str(lineage), seq, int(row[0]) if row else 0)


def trim_point(c: sqlite3.Connection) -> int:
    """The last seq no longer in the log (a follower at or after it can go on)."""
    row = c.execute("SELECT MIN(seq) FROM changes").fetchone()
    return int(row[0]) - 1 if row[0] is not None else head(c)


def trim(c: sqlite3.Connection, before_at: str, keep: int) -> int:
    """Drop entries older than `before_at` beyond the newest `keep` (the head always stays);
    how many went."""
    last = head(c)
    cur = c.execute("DELETE FROM changes WHERE seq < ? AND (at < ? OR seq <= ?)",
                    (last, before_at, last - keep))
    if cur.rowcount:
        c.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('trimmed', ?)",
                  (trim_point(c),))
    return cur.rowcount
