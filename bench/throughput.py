"""Runs recorded and dispatched per second through the ledger and two real local agents.

    .venv/bin/python bench/throughput.py [--runs 600] [--batch 100]

Figures (no assertions):
  baseline A   raw SQLite inserts, WAL + synchronous=FULL, one transaction per row
  baseline B   the same, one transaction per batch of --batch rows
  ledger only  Ledger.apply through the BatchWriter: create + "running" update per run
  end to end   create in the ledger (batches) -> dispatch to an agent (HTTP, epoch) -> record
  dedup pass   the same again to agents that already know the runs: no process is started, so
               this is the scheduler + HTTP + agent-record path alone
Target: >= 500 runs/s end to end. Each dispatched run also starts a process on the agent (its
supervisor, forked by the agent's launcher, then the job), which is what bounds the end-to-end
figure on a small machine.

Each pass also prints where its time went (the ledger's create transactions, the dispatches)
and the CPU it cost per run: this process (the scheduler side), the agents, their launchers, and
the rest of the machine's busy time, which holds the supervisors and jobs (short-lived, counted
nowhere else) but also whatever else runs meanwhile: on a shared machine, read it with that.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from scheduler.agent import containment  # noqa: E402
from scheduler.agents import AgentPool  # noqa: E402
from scheduler.dispatch import Dispatcher  # noqa: E402
from scheduler.jobs import Job  # noqa: E402
from scheduler.ledger import BatchWriter, Change, Ledger, nominal_iso  # noqa: E402
from scheduler.protocol import AgentClient  # noqa: E402
from scheduler.runs import Run  # noqa: E402
from scheduler.triggers import IntervalTrigger  # noqa: E402

TOKEN = "bench-agent-token-0123456789abcdef"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LocalAgent:
    """A real `hasched agent run` on a loopback port, in its own session."""

    def __init__(self, root: Path, name: str, extra: str = "") -> None:
        self.name, self.dir, self.port = name, root / f"agent-{name}", free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.dir.mkdir(parents=True)
        (self.dir / "token").write_text(TOKEN + "\n")
        (self.dir / "token").chmod(0o600)
        (self.dir / "agent.toml").write_text(
            f'[agent]\nname = "{name}"\nlisten = "127.0.0.1:{self.port}"\n'
            f'state_dir = "{self.dir / "state"}"\ntoken_file = "{self.dir / "token"}"\n' + extra)
        log = open(self.dir / "agent.log", "ab")  # noqa: SIM115 - handed to the child
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "scheduler", "agent", "run", "--config",
             str(self.dir / "agent.toml"), "--log-level", "warning"],
            stdout=log, stderr=log, start_new_session=True, cwd=str(ROOT))
        log.close()

    async def wait_ready(self, client: AgentClient) -> None:
        for _ in range(300):
            try:
                await client.health()
                return
            except Exception:
                await asyncio.sleep(0.1)
        raise SystemExit(f"agent {self.name} did not start; see {self.dir / 'agent.log'}")

    def stop(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(30)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            os.killpg(self.proc.pid, signal.SIGKILL)


@dataclass
class CpuSample:
    """CPU seconds used so far: this process (the scheduler side), the agents, their launchers
    (which fork the supervisors) and the whole machine (busy time of every core)."""

    scheduler: float
    agents: float
    launchers: float
    machine: float

    @staticmethod
    def take(agents: list[LocalAgent]) -> CpuSample:
        def cpu(p: psutil.Process) -> float:
            try:
                t = p.cpu_times()
            except psutil.Error:
                return 0.0
            return t.user + t.system

        procs = [psutil.Process(a.proc.pid) for a in agents]
        launchers = [c for p in procs for c in p.children()]
        m = psutil.cpu_times()
        return CpuSample(time.process_time(), sum(map(cpu, procs)), sum(map(cpu, launchers)),
                         m.user + m.nice + m.system + m.irq + m.softirq)

    def per_run_ms(self, later: CpuSample, n: int) -> str:
        s, a, lch = (later.scheduler - self.scheduler, later.agents - self.agents,
                     later.launchers - self.launchers)
        rest = later.machine - self.machine - s - a - lch
        return (f"scheduler {s / n * 1e3:.2f}, agents {a / n * 1e3:.2f}, launchers "
                f"{lch / n * 1e3:.2f}, rest of the machine {rest / n * 1e3:.2f} (supervisors, "
                f"jobs, other users)")


def baseline(path: Path, n: int, batch: int) -> float:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("CREATE TABLE t (run_id TEXT, attempt INT, job TEXT, nominal TEXT, state TEXT,"
                 " PRIMARY KEY (run_id, attempt))")
    t0 = time.perf_counter()
    for start in range(0, n, batch):
        conn.execute("BEGIN")
        for i in range(start, min(n, start + batch)):
            conn.execute("INSERT INTO t VALUES (?, 1, 'j', 'x', 'scheduled')", (f"j@{i}",))
        conn.execute("COMMIT")
    elapsed = time.perf_counter() - t0
    conn.close()
    return n / elapsed


async def ledger_only(path: Path, n: int, batch: int) -> float:
    ledger = Ledger(path)
    writer = BatchWriter(ledger)
    t0 = time.perf_counter()
    for start in range(0, n, batch):
        ids = [f"j@{i}" for i in range(start, min(n, start + batch))]
        await writer.write([Change("create", r, 1, "j", {"nominal": r}) for r in ids])
        await asyncio.gather(*(writer.write([Change("update", r, 1, fields={
            "state": "running"}, when=("scheduled",))]) for r in ids))
    elapsed = time.perf_counter() - t0
    ledger.close()
    return n / elapsed


async def end_to_end(root: Path, agents: list[LocalAgent], n: int, batch: int,
                     db: str) -> float:
    clients = {a.name: AgentClient(a.name, a.url, TOKEN) for a in agents}
    for a in agents:
        await a.wait_ready(clients[a.name])
    ledger = Ledger(root / db)
    writer = BatchWriter(ledger)
    job = Job(name="bench", command=("true",), trigger=IntervalTrigger(1.0), pool="workers")

    pool = AgentPool(clients, {a.name: ["workers"] for a in agents})
    disp = Dispatcher(writer, pool, lambda: 1,
                      lambda agent, e: print(f"stale epoch from {agent}: {e}"))
    base = 1_700_000_000  # the same run ids in both passes: the second one meets agents' dedup
    t_create = t_dispatch = 0.0
    cpu0 = CpuSample.take(agents)
    t0 = time.perf_counter()
    for start in range(0, n, batch):
        rows = []
        for i in range(start, min(n, start + batch)):
            nominal = nominal_iso(datetime.fromtimestamp(base + i, UTC))
            rows.append(Run(f"bench@{nominal}", 1, "bench", nominal,
                            agent=pool.pick(job)))
        t1 = time.perf_counter()
        await writer.write([Change("create", r.run_id, 1, "bench",
                                   {"nominal": r.nominal, "agent": r.agent}) for r in rows])
        t2 = time.perf_counter()
        ok = await asyncio.gather(*(disp.dispatch(r, job) for r in rows))
        t_create, t_dispatch = t_create + t2 - t1, t_dispatch + time.perf_counter() - t2
        if not all(ok):
            print(f"  {ok.count(False)} dispatch(es) failed")
    elapsed = time.perf_counter() - t0
    cpu1 = CpuSample.take(agents)
    counts = ledger.counts()
    print(f"  {db}: ledger after the pass: {counts}; {elapsed * 1e3:.0f} ms = creates "
          f"{t_create * 1e3:.0f} ms + dispatches {t_dispatch * 1e3:.0f} ms + planning")
    print(f"  {db}: CPU ms per run: {cpu0.per_run_ms(cpu1, n)}")
    for c in clients.values():
        await c.close()
    ledger.close()
    return n / elapsed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=600)
    ap.add_argument("--batch", type=int, default=100)
    ap.add_argument("--jobs-as-agent", action="store_true",
                    help="jobs run as the agent's own account (allow_agent_account), not as "
                         "the default user (nobody, when the agent is root)")
    ap.add_argument("--no-cgroups", action="store_true",
                    help="cgroups = false: runs in their process group only")
    args = ap.parse_args()
    extra = ""
    if args.jobs_as_agent:
        import pwd  # noqa: PLC0415
        extra += (f'allow_agent_account = true\n'
                  f'default_user = "{pwd.getpwuid(os.getuid()).pw_name}"\n')
    if args.no_cgroups:
        extra += "cgroups = false\n"
    with tempfile.TemporaryDirectory(prefix="hasched-bench-") as tmp:
        root = Path(tmp)
        a = baseline(root / "base-a.sqlite", min(args.runs, 2000), 1)
        b = baseline(root / "base-b.sqlite", args.runs * 10, args.batch)
        lo = asyncio.run(ledger_only(root / "ledger.sqlite", args.runs * 10, args.batch))
        agents = [LocalAgent(root, "b1", extra), LocalAgent(root, "b2", extra)]
        try:
            e2e = asyncio.run(end_to_end(root, agents, args.runs, args.batch, "e2e.sqlite"))
            time.sleep(3)  # let the supervisors of the first pass finish
            dedup = asyncio.run(end_to_end(root, agents, args.runs, args.batch, "dedup.sqlite"))
        finally:
            for ag in agents:
                ag.stop()
            time.sleep(2)  # let the last supervisors of `true` finish before the dir goes
            for ag in agents:  # the cgroups of runs that ended after their agent stopped
                containment.prepare(ag.name, str(ag.dir / "state")).remove(kill=True)
    print(f"baseline A, raw SQLite, 1 row per transaction  : {a:9.0f} rows/s")
    print(f"baseline B, raw SQLite, {args.batch} rows per transaction: {b:9.0f} rows/s")
    print(f"ledger only (create + update, BatchWriter)     : {lo:9.0f} runs/s "
          f"({lo / a:.1f}x baseline A, {lo / b:.2f}x baseline B)")
    print(f"end to end, ledger + 2 agents ({args.runs} runs)     : {e2e:9.0f} runs/s "
          f"(target >= 500; {e2e / a:.2f}x baseline A)")
    print(f"same, agents already know the runs (no process start): {dedup:9.0f} runs/s "
          f"({dedup / a:.2f}x baseline A)")


if __name__ == "__main__":
    main()
