"""Ledger replication: durable throughput with sync replication beside the same without, the
replication lag at a steady rate, and the time a standby takes to catch up on a long log.

    .venv/bin/python bench/replication.py [--runs 3000] [--rate 100] [--seconds 10]
                                          [--changes 360000]

The active side (a Ledger, the BatchWriter, the real /v1/replication handlers on loopback) runs
in this process; the follower (the real Follower, its own Ledger) in a child process, as on a
standby. Figures (no assertions):
  unreplicated   runs/s: per run a create, a "dispatched" and a "succeeded" write through the
                 BatchWriter (batches of --batch runs), no [replication]; by 1 writer (each
                 batch waits for the one before) and by --lanes concurrent writers
  sync           the same with a follower in sync mode: each batch is answered once the
                 follower's ack covers it. Goal: >= 500 runs/s and >= 0.8 x unreplicated.
  lag            active commit -> follower commit, p50/p99, while one run a 1/--rate s is
                 created (and dispatched, finished) for --seconds
  catch-up       a standby --changes entries behind (an hour at 100 runs/s) following the
                 stream until in step; and the same from a snapshot. Goal: <= 30 s.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from aiohttp import web  # noqa: E402
from throughput import TOKEN as AGENT_TOKEN  # noqa: E402
from throughput import LocalAgent  # noqa: E402

from scheduler.agent import containment  # noqa: E402
from scheduler.agents import AgentPool  # noqa: E402
from scheduler.api import make_app  # noqa: E402
from scheduler.changelog import Entry, Image  # noqa: E402
from scheduler.dispatch import Dispatcher  # noqa: E402
from scheduler.jobs import Job  # noqa: E402
from scheduler.ledger import BatchWriter, Change, Ledger, nominal_iso  # noqa: E402
from scheduler.metrics import Metrics  # noqa: E402
from scheduler.protocol import AgentClient  # noqa: E402
from scheduler.replication.follower import Follower  # noqa: E402
from scheduler.replication.source import Source  # noqa: E402
from scheduler.replication.waiter import SyncWaiter  # noqa: E402
from scheduler.runs import Run  # noqa: E402
from scheduler.triggers import IntervalTrigger  # noqa: E402
from tests.ports import free_port  # noqa: E402

TOKEN = "bench-replication-token-0123456789abcdef"


class Active:
    """What make_app needs of a Service here: /health says active."""

    public_role = "active"

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger

    def health(self) -> dict[str, Any]:
        return {"role": "active", "epoch": self.ledger.epoch()}


async def serve(ledger: Ledger, waiter: SyncWaiter, out: Path) -> tuple[str, web.AppRunner]:
    source = Source(ledger, waiter, out, lambda: "active")
    source.start()
    app = make_app(Active(ledger), frozenset(), Metrics(),  # type: ignore[arg-type]
                   source.add_routes, frozenset({TOKEN}))
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return f"http://127.0.0.1:{port}", runner


def follower_process(url: str, db: Path, times: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, __file__, "--follow", url, "--db", str(db),
                             "--times", str(times)], cwd=str(ROOT))


async def follow(url: str, db: Path, times: Path) -> None:
    """The child: follow `url`, writing "head monotonic_time" after each answer applied."""
    ledger = Ledger(db)
    f = Follower(ledger, (url,), TOKEN, None, db.parent / "out")
    with open(times, "a", buffering=1) as out:
        while True:
            try:
                await f.step(url, 5.0)
            except Exception as e:  # the bench's active went away: done
                print(f"follower: {e}", file=sys.stderr)
                return
            out.write(f"{ledger.head} {time.monotonic()}\n")


@asynccontextmanager
async def ledger_writer(root: Path, name: str, replicated: bool
                        ) -> AsyncIterator[tuple[Ledger, BatchWriter]]:
    """A pass's ledger (`name`.sqlite) and its BatchWriter; with `replicated`, behind a sync
    follower in a child process that starts on our lineage (`name`-f.sqlite, its apply times in
    `name`.times). The follower, the server and the ledger are stopped on leaving."""
    ledger = Ledger(root / f"{name}.sqlite")
    waiter = SyncWaiter(lambda: ledger.head, True, 5.0)
    child = runner = None
    if replicated:
        url, runner = await serve(ledger, waiter, root / "out")
        ledger.snapshot(root / f"{name}-f.sqlite")
        child = follower_process(url, root / f"{name}-f.sqlite", root / f"{name}.times")
        while waiter.state != "primary":
            await asyncio.sleep(0.05)
    try:
        yield ledger, BatchWriter(ledger, waiter if replicated else None)
    finally:
        if child is not None:
            child.terminate()
            child.wait()
        if runner is not None:
            await runner.cleanup()
        ledger.close()


def runs(start: int, n: int) -> list[list[Change]]:
    ids = [f"bench@{i:09d}" for i in range(start, start + n)]
    return [[Change("create", r, 1, "bench", {"nominal": r, "agent": "b1"}) for r in ids],
            [Change("update", r, 1, fields={"state": "dispatched"}, when=("scheduled",))
             for r in ids],
            [Change("update", r, 1, fields={"state": "succeeded"}, when=("dispatched",))
             for r in ids]]


async def throughput(root: Path, n: int, batch: int, replicated: bool, lanes: int) -> float:
    name = f"{'sync' if replicated else 'alone'}-{lanes}"
    root.mkdir(exist_ok=True)
    async with ledger_writer(root, f"tp-{name}", replicated) as (_, writer):

        async def lane(first: int) -> None:
            for start in range(first, n, batch * lanes):
                for changes in runs(start, min(batch, n - start)):
                    # each run's write on its own, as the collector's and dispatcher's
                    # coroutines do
                    await asyncio.gather(*(writer.write([c]) for c in changes))

        t0 = time.perf_counter()
        await asyncio.gather(*(lane(i * batch) for i in range(lanes)))
        elapsed = time.perf_counter() - t0
    return n / elapsed


async def end_to_end(root: Path, agents: list[LocalAgent], n: int, batch: int,
                     replicated: bool, base: int) -> float:
    """bench/throughput.py's end to end pass (create in the ledger, dispatch to 2 real agents,
    each run recording "dispatched"), with or without a sync follower."""
    name = f"e2e-{'sync' if replicated else 'alone'}"
    clients = {a.name: AgentClient(a.name, a.url, AGENT_TOKEN) for a in agents}
    for a in agents:
        await a.wait_ready(clients[a.name])
    async with ledger_writer(root, name, replicated) as (_, writer):
        job = Job(name="bench", command=("true",), trigger=IntervalTrigger(1.0), pool="workers")
        pool = AgentPool(clients, {a.name: ["workers"] for a in agents})
        disp = Dispatcher(writer, pool, lambda: 1, lambda agent, e: print(f"stale epoch: {e}"))
        t0 = time.perf_counter()
        for start in range(0, n, batch):
            rows = []
            for i in range(start, min(n, start + batch)):
                nominal = nominal_iso(datetime.fromtimestamp(base + i, UTC))
                rows.append(Run(f"bench@{nominal}", 1, "bench", nominal, agent=pool.pick(job)))
            await writer.write([Change("create", r.run_id, 1, "bench",
                                       {"nominal": r.nominal, "agent": r.agent}) for r in rows])
            await asyncio.gather(*(disp.dispatch(r, job) for r in rows))
        elapsed = time.perf_counter() - t0
        for c in clients.values():
            await c.close()
    return n / elapsed


def with_agents(root: Path, n: int, batch: int) -> tuple[float, float]:
    agents = [LocalAgent(root, "b1"), LocalAgent(root, "b2")]
    try:
        alone = asyncio.run(end_to_end(root, agents, n, batch, False, 1_700_000_000))
        time.sleep(3)  # the first pass's supervisors finish
        synced = asyncio.run(end_to_end(root, agents, n, batch, True, 1_700_100_000))
    finally:
        for a in agents:
            a.stop()
        time.sleep(2)
        for a in agents:
            containment.prepare(a.name, str(a.dir / "state")).remove(kill=True)
    return alone, synced


async def lag(root: Path, rate: float, seconds: float) -> list[float]:
    committed: dict[int, float] = {}
    async with ledger_writer(root, "lag", True) as (ledger, writer):
        ledger.on_commit(lambda seq: committed.__setitem__(seq, time.monotonic()))
        tasks = []
        t0 = time.monotonic()
        for i in range(int(rate * seconds)):
            await asyncio.sleep(max(0.0, t0 + i / rate - time.monotonic()))
            tasks.append(asyncio.create_task(one_run(writer, i)))
        await asyncio.gather(*tasks)
        await asyncio.sleep(1.0)
    times = root / "lag.times"
    applied = [(int(s), float(t)) for s, t in
               (line.split() for line in times.read_text().splitlines())]
    out = []
    for seq, at in committed.items():
        later = [t for s, t in applied if s >= seq]
        if later:
            out.append(min(later) - at)
    return out


async def one_run(writer: BatchWriter, i: int) -> None:
    for changes in runs(10_000_000 + i, 1):
        await writer.write(changes)


async def catch_up(root: Path, changes: int) -> tuple[float, float]:
    ledger = Ledger(root / "long.sqlite")
    ledger.snapshot(root / "long-f.sqlite")  # the standby, on our lineage, at seq 0
    states = ("scheduled", "dispatched", "succeeded")
    chunk, seq = 10_000, 0
    while seq < changes:  # an hour of entries, written fast (no fsync per entry here)
        entries = []
        for s in range(seq + 1, min(changes, seq + chunk) + 1):
            row = {"run_id": f"bench@{s // 3:09d}", "attempt": 1, "job": "bench",
                   "nominal": f"{s // 3:09d}", "state": states[s % 3], "manual": 0,
                   "scheduled_at": "2026-01-01T00:00:00.000000Z", "agent": "b1"}
            entries.append(Entry(s, 0, "2026-01-01T00:00:00.000000Z",
                                 (Image("runs", (row["run_id"], 1), row),)))
        ledger.append(entries)
        seq = entries[-1].seq
    waiter = SyncWaiter(lambda: ledger.head, False, 5.0)
    url, runner = await serve(ledger, waiter, root / "out")
    times = root / "long.times"
    results = []
    for db in ("long-f.sqlite", "long-snap.sqlite"):
        if db == "long-snap.sqlite":
            Ledger(root / db).close()  # another lineage: the follower takes a snapshot
        times.write_text("")
        t0 = time.monotonic()
        child = follower_process(url, root / db, times)
        while not times.read_text().strip() or int(
                times.read_text().split()[-2]) < ledger.head:
            await asyncio.sleep(0.05)
        results.append(time.monotonic() - t0)
        child.terminate()
        child.wait()
    await runner.cleanup()
    ledger.close()
    return results[0], results[1]


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p * len(xs)))] if xs else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3000)
    ap.add_argument("--batch", type=int, default=100)
    ap.add_argument("--lanes", type=int, default=4,
                    help="concurrent writers (the collector, the dispatcher, the planner and "
                         "the API write at once in the scheduler)")
    ap.add_argument("--e2e-runs", type=int, default=600)
    ap.add_argument("--repeat", type=int, default=3, help="interleaved repetitions of the "
                    "ledger throughput passes (the median is shown)")
    ap.add_argument("--rate", type=float, default=100.0)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--changes", type=int, default=360_000)
    ap.add_argument("--follow", help=argparse.SUPPRESS)
    ap.add_argument("--db", help=argparse.SUPPRESS)
    ap.add_argument("--times", help=argparse.SUPPRESS)
    args = ap.parse_args()
    logging.getLogger("hasched").setLevel(logging.ERROR)  # the figures, not the daemons' chatter
    if args.follow:
        asyncio.run(follow(args.follow, Path(args.db), Path(args.times)))
        return
    with tempfile.TemporaryDirectory(prefix="hasched-bench-") as tmp:
        root = Path(tmp)
        lags = asyncio.run(lag(root, args.rate, args.seconds))
        # Interleaved repetitions, the median of each: a shared machine's load drifts.
        reps: dict[tuple[int, bool], list[float]] = {}
        for i in range(args.repeat):
            for lanes in (1, args.lanes):
                for repl in (False, True):
                    reps.setdefault((lanes, repl), []).append(asyncio.run(throughput(
                        root / f"r{i}", args.runs, args.batch, repl, lanes)))
        tp = {k: statistics.median(v) for k, v in reps.items()}
        stream, snap = asyncio.run(catch_up(root, args.changes))
        e2e = with_agents(root, args.e2e_runs, args.batch)  # last: its jobs' processes linger
    print(f"end to end (ledger + 2 agents, {args.e2e_runs} runs), no replication  : "
          f"{e2e[0]:6.0f} runs/s")
    print(f"end to end (ledger + 2 agents, {args.e2e_runs} runs), sync replication: "
          f"{e2e[1]:6.0f} runs/s ({e2e[1] / e2e[0]:.2f}x; goal >= 500 runs/s and >= 0.8x)")
    for lanes in (1, args.lanes):
        alone, synced = tp[(lanes, False)], tp[(lanes, True)]
        print(f"durable throughput, {lanes} writer(s), no replication  : {alone:6.0f} runs/s")
        print(f"durable throughput, {lanes} writer(s), sync replication: {synced:6.0f} runs/s "
              f"({synced / alone:.2f}x; goal >= 500 runs/s and >= 0.8x)")
    print(f"replication lag at {args.rate:g} runs/s, {len(lags)} commits: p50 "
          f"{pct(lags, 0.5) * 1e3:.1f} ms, p99 {pct(lags, 0.99) * 1e3:.1f} ms")
    print(f"catch-up of {args.changes} changes by the stream: {stream:6.1f} s (goal <= 30 s)")
    print(f"the same from a snapshot (new lineage)    : {snap:6.1f} s")
    shown = {f"{k[0]} writers, {'sync' if k[1] else 'none'}": round(v) for k, v in tp.items()}
    print(json.dumps({"e2e": {"none": round(e2e[0]), "sync": round(e2e[1])}, "throughput": shown,
                      "lag_p50_ms": round(pct(lags, 0.5) * 1e3, 1),
                      "lag_p99_ms": round(pct(lags, 0.99) * 1e3, 1),
                      "catch_up_s": round(stream, 1), "snapshot_s": round(snap, 1),
                      "pid": os.getpid()}))


if __name__ == "__main__":
    main()
