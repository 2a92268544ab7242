"""The follower against an in-process source (the real /v1/replication handlers on loopback,
two real ledgers in tmp_path), and the sync waiter."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestServer

from scheduler.api import make_app
from scheduler.ledger import BatchWriter, Change, Ledger
from scheduler.metrics import Metrics
from scheduler.replication.follower import Follower
from scheduler.replication.handover import Handover
from scheduler.replication.source import Source
from scheduler.replication.waiter import ALONE, PRIMARY, SyncWaiter

pytestmark = pytest.mark.unit
TOKEN = "replication-token-0123456789-0123456789"
API = "api-token-0123456789-0123456789-0123"
RID = "j@2026-01-01T00:00:00Z"


class ActiveService:
    """Enough of a Service for make_app: /health says active."""

    public_role = "active"

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger

    def health(self) -> dict[str, Any]:
        return {"role": "active", "epoch": self.ledger.epoch()}


@asynccontextmanager
async def serving(ledger: Ledger, tmp: Path,
                  handover: Callable[[dict[str, Any]], Awaitable[dict[str, Any]]] | None = None,
                  role: str = "active") -> AsyncIterator[tuple[str, Source]]:
    waiter = SyncWaiter(lambda: ledger.head, True, 1.0)
    source = Source(ledger, waiter, tmp / "out-a", lambda: role, handover)
    source.start()
    app = make_app(ActiveService(ledger), frozenset({API}), Metrics(),  # type: ignore[arg-type]
                   source.add_routes, frozenset({TOKEN}))
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        yield str(server.make_url("")).rstrip("/"), source
    finally:
        await server.close()


def follower(ledger: Ledger, url: str, tmp: Path) -> Follower:
    return Follower(ledger, (url,), TOKEN, None, tmp / "out-b")


def test_the_follower_applies_the_sources_entries_and_acks_them(tmp_path: Path) -> None:
    active, replica = Ledger(tmp_path / "a.sqlite"), Ledger(tmp_path / "b.sqlite")
    active.apply([Change("job", job="j", fields={"paused": True})])

    async def go() -> None:
        async with serving(active, tmp_path) as (url, source):
            f = follower(replica, url, tmp_path)
            assert await f.find_source() == url
            await f.step(url, 0)  # another lineage: a snapshot
            assert replica.position() == active.position() and replica.paused_jobs() == {"j"}
            active.apply([Change("create", RID, 1, "j", {"nominal": "2026-01-01T00:00:00Z"})])
            await f.step(url, 0)
            assert replica.get_run(RID) is not None and f.behind == 0
            assert source.waiter.acked < active.head  # acked with the NEXT request
            await f.step(url, 0)
            assert source.waiter.acked == active.head
            assert f.view().behind == 0
            await f.stop(0)

    asyncio.run(go())


def test_a_long_poll_answers_as_soon_as_a_change_is_committed(tmp_path: Path) -> None:
    active, replica = Ledger(tmp_path / "a.sqlite"), Ledger(tmp_path / "b.sqlite")
    active.apply([Change("job", job="j", fields={"paused": True})])

    async def go() -> None:
        async with serving(active, tmp_path) as (url, _):
            f = follower(replica, url, tmp_path)
            await f.step(url, 0)
            poll = asyncio.create_task(f.step(url, 20.0))
            await asyncio.sleep(0.2)
            assert not poll.done()
            active.apply([Change("job", job="j", fields={"paused": False})])
            await asyncio.wait_for(poll, 5)  # well before the 20 s of the poll
            assert replica.paused_jobs() == set()
            await f.stop(0)

    asyncio.run(go())


def test_the_drain_at_promotion_takes_all_a_demoted_source_has(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from scheduler.replication import follower as following

    monkeypatch.setattr(following, "BATCH", 2)  # several answers' worth behind
    active, replica = Ledger(tmp_path / "a.sqlite"), Ledger(tmp_path / "b.sqlite")
    active.snapshot(tmp_path / "snap.sqlite")
    replica.restore(tmp_path / "snap.sqlite")
    for i in range(7):
        active.apply([Change("job", job=f"j{i}", fields={"paused": True})])

    async def go() -> None:
        async with serving(active, tmp_path, role="standby") as (url, _):
            f = follower(replica, url, tmp_path)
            f.source = url
            assert await f._drain() == 7
            await f.stop(0)

    asyncio.run(go())
    assert replica.position() == active.position()


def test_a_diverged_tail_is_handed_over_then_the_follower_resyncs(tmp_path: Path) -> None:
    # B followed A to seq 2, was promoted (epoch 2) and paused "k"; A, cut off, accepted a
    # manual run (its tail). A comes back and follows B.
    a, b = Ledger(tmp_path / "a.sqlite"), Ledger(tmp_path / "b.sqlite")
    a.raise_epoch(1)
    a.apply([Change("job", job="j", fields={"first_seen": "2026-01-01T00:00:00Z"})])
    a.snapshot(tmp_path / "snap.sqlite")
    b.restore(tmp_path / "snap.sqlite")  # B, A's follower, holds A's first two entries
    a.apply([Change("create", RID, 1, "j", {"nominal": "2026-01-01T00:00:00Z", "manual": 1})])
    a.apply([Change("job", job="q", fields={"paused": True})])
    b.raise_epoch(2)
    b.apply([Change("job", job="k", fields={"paused": True})])

    async def go() -> None:
        writer = BatchWriter(b)
        async with serving(b, tmp_path, Handover(b, writer).receive) as (url, _):
            f = follower(a, url, tmp_path)
            await f.step(url, 0)
            assert a.position() == b.position()
            await f.stop(0)

    asyncio.run(go())
    run = b.get_run(RID)
    assert run is not None and run.manual and run.state == "scheduled"  # created on B
    assert b.paused_jobs() == {"k", "q"}  # q untouched on B since the fork: A's pause holds
    assert a.get_run(RID) is not None and a.paused_jobs() == {"k", "q"}


def test_the_replication_endpoints_take_the_replication_token_only(tmp_path: Path) -> None:
    active = Ledger(tmp_path / "a.sqlite")

    async def go() -> None:
        async with serving(active, tmp_path) as (url, _):
            f = Follower(Ledger(tmp_path / "b.sqlite"), (url,), API, None, tmp_path)
            status, _ = await f._get(f"{url}/v1/replication/status")
            assert status == 401
            await f.stop(0)

    asyncio.run(go())


def test_the_sync_waiter_answers_on_ack_and_goes_alone_after_the_timeout() -> None:
    head = [5]

    async def go() -> None:
        w = SyncWaiter(lambda: head[0], True, 0.2)
        assert w.state == ALONE and not w.must_wait(5)  # no follower yet: nobody to wait for
        w.ack(5)
        assert w.state == PRIMARY
        head[0] = 6
        waiting = asyncio.create_task(w.wait(6))
        await asyncio.sleep(0.05)
        assert not waiting.done()
        w.ack(6)
        assert await waiting is True
        head[0] = 7
        assert await w.wait(7) is False  # nobody acked within the timeout
        assert w.state == ALONE and not w.must_wait(8)
        w.ack(7)
        assert w.state == PRIMARY  # caught up with the head again

    asyncio.run(go())


def test_async_mode_never_waits() -> None:
    w = SyncWaiter(lambda: 1, False, 0.2)
    w.ack(1)
    assert not w.must_wait(2)


def test_a_batch_is_answered_only_once_the_follower_holds_it(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "a.sqlite")

    async def go() -> None:
        w = SyncWaiter(lambda: ledger.head, True, 30.0)
        w.ack(0)
        writer = BatchWriter(ledger, w)
        write = asyncio.create_task(writer.write([Change("job", job="j",
                                                          fields={"paused": True})]))
        await asyncio.sleep(0.1)
        assert not write.done() and ledger.paused_jobs() == {"j"}  # committed, not answered
        w.ack(ledger.head)
        assert await write == [True]

    asyncio.run(go())



def test_history_older_than_the_setting_is_deleted_through_the_log(tmp_path: Path) -> None:
    from datetime import UTC, datetime

    from scheduler.retention import HistoryPruner

    active, replica = Ledger(tmp_path / "a.sqlite"), Ledger(tmp_path / "b.sqlite")
    out = tmp_path / "out"
    (out / "j").mkdir(parents=True)
    (out / "j" / f"{RID}.1.stdout").write_text("old\n")
    new = "j@2026-03-01T00:00:00Z"
    active.apply([Change("create", RID, 1, "j", {"nominal": "2026-01-01T00:00:00Z",
                                                  "state": "succeeded",
                                                  "output_path": f"j/{RID}.1"}),
                  Change("create", new, 1, "j", {"nominal": "2026-03-01T00:00:00Z",
                                                  "state": "succeeded"}),
                  Change("create", "j@2025-12-01T00:00:00Z", 1, "j",
                         {"nominal": "2025-12-01T00:00:00Z"})])  # still scheduled: kept
    pruner = HistoryPruner(active, BatchWriter(active), out, 30 * 86400.0,
                           lambda: datetime(2026, 3, 2, tzinfo=UTC))
    assert asyncio.run(pruner.prune()) == 1
    assert active.get_run(RID) is None and active.get_run(new) is not None
    assert not (out / "j" / f"{RID}.1.stdout").exists()
    replica.append(active.entries(0, 100))
    assert replica.get_run(RID) is None and replica.get_run(new) is not None


def test_a_promoted_node_recovers_unmirrored_output_from_the_agent(tmp_path: Path) -> None:
    from agentfakes import FakeAgent

    from scheduler.agents import AgentPool
    from scheduler.collect import Collector

    ledger = Ledger(tmp_path / "b.sqlite")
    ledger.apply([Change("create", RID, 1, "j", {"nominal": "2026-01-01T00:00:00Z",
                                                  "state": "succeeded", "agent": "a1",
                                                  "output_path": f"j/{RID}.1"})])
    agent = FakeAgent("a1")
    agent.outputs[(RID, 1, "stdout")] = "kept by the agent\n"
    pool = AgentPool({"a1": agent}, {})  # type: ignore[dict-item]

    async def nothing(*_: Any) -> Any:
        return True

    collector = Collector(ledger, BatchWriter(ledger), pool, tmp_path / "out", lambda: 1,
                          nothing, lambda *_: None, nothing)
    assert asyncio.run(collector.recover_output([(RID, 1), ("gone@x", 1)])) == 1
    assert (tmp_path / "out" / "j" / f"{RID}.1.stdout").read_text() == "kept by the agent\n"
