"""Promotion and collect-pass time with one agent stopped (SIGSTOP), beside all agents up.

    .venv/bin/python bench/promotion.py [--repeat 5] [--jobs 20]

A real standby `hasched scheduler run` and two real agents on loopback. Each round promotes the
standby (`ctl promote`, timed from this side until the answer: what Pacemaker's promote action
waits for) with both agents up, demotes it, then does the same with agent a1 SIGSTOPped (it
accepts connections and never answers, like a hung node; the standby's probes have left a
kept-alive connection to it), then lets a1 go on. Issue 9 measured 5.4 s for the second.

Then a collect pass (scheduler.collect.Collector, in this process, real AgentClients) over both
agents, each holding unacknowledged runs, with both up and with a1 stopped: before the bound,
a pass waited for the stopped agent's epoch push (3 s) every pass.

Figures, no assertions; the bounds they follow are scheduler.agents.PROBE_TIMEOUT and
scheduler.collect.COLLECT_WAIT.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from throughput import ROOT, TOKEN, LocalAgent  # noqa: E402

sys.path.insert(0, str(ROOT))
from scheduler.agent import containment  # noqa: E402
from scheduler.agents import AgentPool  # noqa: E402
from scheduler.collect import Collector  # noqa: E402
from scheduler.control import request  # noqa: E402
from scheduler.ledger import BatchWriter, Change, Ledger  # noqa: E402
from scheduler.protocol import AgentClient, DispatchOrder  # noqa: E402
from scheduler.runs import Run  # noqa: E402
from tests.ports import free_port  # noqa: E402

PROBE_SETTLE = 6.0  # > the standby's probe period (5 s): its kept-alive connections exist


class Standby:
    """A standby scheduler over the agents, with `jobs` jobs every 10 s on their pool."""

    def __init__(self, root: Path, agents: list[LocalAgent], jobs: int) -> None:
        self.dir = root / "scheduler"
        (self.dir / "jobs").mkdir(parents=True)
        for i in range(jobs):
            (self.dir / "jobs" / f"j{i}.toml").write_text(
                f'[job.j{i}]\ncommand = ["true"]\nevery = "10s"\npool = "workers"\n')
        (self.dir / "api-tokens").write_text("bench-api-token-0123456789abcdef\n")
        (self.dir / "api-tokens").chmod(0o600)
        lines = ["[scheduler]", f'listen = "127.0.0.1:{free_port()}"',
                 f'state_dir = "{self.dir / "state"}"', f'run_dir = "{self.dir / "run"}"',
                 f'jobs_dir = "{self.dir / "jobs"}"',
                 f'api_tokens_file = "{self.dir / "api-tokens"}"', ""]
        for a in agents:
            lines += [f"[agents.{a.name}]", f'url = "{a.url}"',
                      f'token_file = "{a.dir / "token"}"', 'labels = ["workers"]', ""]
        (self.dir / "scheduler.toml").write_text("\n".join(lines))
        self.socket = self.dir / "run" / "control.sock"
        log = open(self.dir / "scheduler.log", "ab")  # noqa: SIM115 - handed to the child
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "scheduler", "scheduler", "run", "--config",
             str(self.dir / "scheduler.toml"), "--role", "standby"],
            stdout=log, stderr=log, start_new_session=True, cwd=str(ROOT))
        log.close()
        for _ in range(300):
            try:
                if request(self.socket, {"op": "status"}).get("ok"):
                    return
            except OSError:
                pass
            time.sleep(0.1)
        raise SystemExit(f"the scheduler did not start; see {self.dir / 'scheduler.log'}")

    def promote(self, epoch: int) -> float:
        start = time.monotonic()
        answer = request(self.socket, {"op": "promote", "epoch": epoch}, timeout=120)
        took = time.monotonic() - start
        if answer.get("role") != "active":
            raise SystemExit(f"promotion refused: {answer}")
        return took

    def demote(self) -> None:
        request(self.socket, {"op": "demote"}, timeout=120)

    def stop(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(30)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            pass


def frozen(agent: LocalAgent, stop: bool) -> None:
    os.killpg(agent.proc.pid, signal.SIGSTOP if stop else signal.SIGCONT)


def promotions(root: Path, agents: list[LocalAgent], repeat: int,
               jobs: int) -> dict[str, list[float]]:
    standby = Standby(root, agents, jobs)
    times: dict[str, list[float]] = {"all agents up": [], "a1 stopped": []}
    epoch = 0
    try:
        for _ in range(repeat):
            for case in times:
                time.sleep(PROBE_SETTLE)
                if case == "a1 stopped":
                    frozen(agents[0], True)
                epoch += 1
                try:
                    times[case].append(standby.promote(epoch))
                    standby.demote()
                finally:
                    frozen(agents[0], False)
    finally:
        standby.stop()
    return times


async def collect_passes(root: Path, agents: list[LocalAgent],
                         repeat: int) -> dict[str, list[float]]:
    clients = {a.name: AgentClient(a.name, a.url, TOKEN) for a in agents}
    ledger = Ledger(root / "collect" / "ledger.sqlite")
    writer = BatchWriter(ledger)
    pool = AgentPool(clients, {a.name: ["workers"] for a in agents})
    for client in clients.values():
        await client.raise_epoch(10_000)
    ledger.raise_epoch(10_000)
    # Runs the agents hold unacknowledged: each pass asks for them and their output.
    for a in agents:
        for i in range(10):
            rid = f"c{a.name}x{i}@2026-01-01T00:00:00Z"
            ledger.apply([Change("create", rid, 1, f"c{a.name}x{i}",
                                 {"nominal": "2026-01-01T00:00:00Z", "agent": a.name})])
            await clients[a.name].dispatch(DispatchOrder(
                run_id=rid, job=f"c{a.name}x{i}", attempt=1, epoch=10_000,
                command=["sleep", "120"]))
            ledger.apply([Change("update", rid, 1, fields={"state": "running"})])

    async def told(agent: str) -> bool:
        return True  # told above, as the term would have

    async def final(run: Run) -> None:
        return None

    collector = Collector(ledger, writer, pool, root / "collect" / "output", ledger.epoch,
                          told, lambda a, e: None, final)
    times: dict[str, list[float]] = {"all agents up": [], "a1 stopped": []}
    try:
        for case in times:
            if case == "a1 stopped":
                frozen(agents[0], True)
            for _ in range(repeat):
                start = time.monotonic()
                await collector.collect()
                times[case].append(time.monotonic() - start)
                await asyncio.sleep(0.2)
    finally:
        frozen(agents[0], False)
        for task in getattr(collector, "in_flight", list)():  # none before the bound
            task.cancel()
        await pool.close()
        ledger.close()
    return times


def show(title: str, times: dict[str, list[float]]) -> None:
    print(title)
    base = statistics.median(times["all agents up"])
    for case, ts in times.items():
        med = statistics.median(ts)
        print(f"  {case:14}  median {med:6.3f} s  max {max(ts):6.3f} s  "
              f"({len(ts)} runs; {med / base:5.1f} x all up)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--jobs", type=int, default=20)
    args = ap.parse_args()
    logging.getLogger("hasched").addHandler(logging.NullHandler())  # the pass's own warnings
    root = Path(tempfile.mkdtemp(prefix="hasched-bench-promotion-"))
    agents = [LocalAgent(root, "a1"), LocalAgent(root, "a2")]
    try:
        async def ready() -> None:
            for a in agents:
                client = AgentClient(a.name, a.url, TOKEN)
                await a.wait_ready(client)
                await client.close()
        asyncio.run(ready())
        show("ctl promote of a standby (2 agents):", promotions(root, agents, args.repeat,
                                                               args.jobs))
        show("collect pass (2 agents, 10 unacknowledged runs each):",
             asyncio.run(collect_passes(root, agents, args.repeat)))
    finally:
        for a in agents:
            a.stop()
            containment.prepare(a.name, str(a.dir / "state")).remove(kill=True)


if __name__ == "__main__":
    main()
