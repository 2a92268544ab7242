"""Dispatch lateness of bursts of fires, beside the time this machine takes to start as many
processes (the floor), with 10,000 jobs loaded.

    .venv/bin/python bench/lateness.py [--bursts 100,300,1000] [--repeat 2] [--jobs 10000]
    .venv/bin/python bench/lateness.py --rate 1000 --seconds 5     (sustained, past capacity)

A real `hasched scheduler run` and two real agents on loopback, configured as in production:
the agents run as root, jobs as `nobody` (their default_user), each run in a cgroup of its own.
Fires that share a second arrive as a burst, as cron jobs on the same minute do.

Burst mode (the default): each burst size fires `--repeat` times, one burst of N one-off jobs on
one whole second, the next once the last has drained. Right before each burst, in the same
quiet moment, this process measures the floor: N `true` processes started with posix_spawn over
two workers, one per agent (bench/spawnfloor.py). Per burst size it prints the lateness p50/p99
beside the floor's and their ratio. Goal: p99 <= 1.5 x the floor, up to the machine's capacity.

Sustained mode (--rate R --seconds S): R fires on each of S seconds. Past capacity nothing may
be lost: the figures count the fires not started yet at the end of the window (and how far
behind the scheduler said it was), and the runs that started before one of an earlier second
on the same agent (out of nominal order).

Lateness is measured twice: "start" is the job's own start (the supervisor notes the instant
its process existed, job_started_at in the run's result), which is what the floor is comparable
to; "agent" is the agent's started_at, the issue's first metric, noted before the supervisor is
forked. No assertions.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.request import urlopen

sys.path.insert(0, str(Path(__file__).resolve().parent))
import spawnfloor  # noqa: E402
from spawnfloor import pct  # noqa: E402
from throughput import ROOT, TOKEN, LocalAgent, free_port  # noqa: E402

sys.path.insert(0, str(ROOT))
from scheduler.agent import containment  # noqa: E402
from scheduler.agent.store import rundir_name  # noqa: E402
from scheduler.control import request  # noqa: E402
from scheduler.protocol import AgentClient  # noqa: E402
from scheduler.times import parse_time  # noqa: E402

FAR = timedelta(days=1)  # the padding jobs fire long after the measured window


def stamp(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def write_jobs(path: Path, slots: list[tuple[datetime, int]], total: int,
               t0: datetime) -> None:
    """slots: (second, fires on it); then padding jobs up to `total`, firing later."""
    lines, i = [], 0
    for at, n in slots:
        for _ in range(n):
            lines += [f"[job.j{i:05d}]", 'command = ["true"]', f'at = "{stamp(at)}"',
                      'pool = "workers"', ""]
            i += 1
    while i < total:
        lines += [f"[job.j{i:05d}]", 'command = ["true"]', f'at = "{stamp(t0 + FAR)}"',
                  'pool = "workers"', ""]
        i += 1
    path.write_text("\n".join(lines))


def drain_time(n: int) -> int:
    """Seconds to leave after a burst of n before the next floor: generous at ~300 runs/s."""
    return 3 + n // 150


async def agent_runs(agents: list[LocalAgent], since: datetime) -> list[dict[str, Any]]:
    out = []
    for a in agents:
        c = AgentClient(a.name, a.url, TOKEN, timeout=60)
        try:
            runs = await c.runs(since=since)
        finally:
            await c.close()
        for r in runs:
            r["_agent"] = a
        out += runs
    return out


def job_start(run: dict[str, Any]) -> datetime | None:
    """When the run's job process existed, from its supervisor's result (or claim) file."""
    rundir = run["_agent"].dir / "state" / "output" / rundir_name(run["run_id"], run["attempt"])
    for name in ("result.json", "started.json"):
        try:
            at = json.loads((rundir / name).read_text()).get("job_started_at")
        except (OSError, ValueError):
            continue
        if at:
            return parse_time(at)
    return None


def nominal(run: dict[str, Any]) -> datetime:
    return parse_time(run["run_id"].split("@")[1])


def health(url: str) -> dict[str, Any]:
    with urlopen(f"{url}/health", timeout=10) as r:  # noqa: S310 - loopback, ours
        return json.loads(r.read())


def wait_until(t: float) -> None:
    while (left := t - time.time()) > 0:
        time.sleep(min(left, 0.5))


def start_scheduler(root: Path, agents: list[LocalAgent], jobs: Path,
                    t_first: float) -> tuple[subprocess.Popen[bytes], str]:
    (root / "api-tokens").write_text("bench-api-token-0123456789abcdef0123456789\n")
    (root / "api-tokens").chmod(0o600)
    port = free_port()
    cfg = root / "scheduler.toml"
    cfg.write_text("\n".join([
        "[scheduler]", f'listen = "127.0.0.1:{port}"',
        f'state_dir = "{root / "state"}"', f'run_dir = "{root / "run"}"',
        f'jobs_dir = "{jobs}"', f'api_tokens_file = "{root / "api-tokens"}"',
        'log_level = "warning"', ""] + [
        f'[agents.{a.name}]\nurl = "{a.url}"\ntoken_file = "{a.dir / "token"}"\n'
        'labels = ["workers"]\n' for a in agents]))
    log = open(root / "scheduler.log", "ab")  # noqa: SIM115 - handed to the child
    sched = subprocess.Popen([sys.executable, "-m", "scheduler", "scheduler", "run",
                              "--config", str(cfg)], stdout=log, stderr=log,
                             start_new_session=True, cwd=str(ROOT))
    log.close()
    loaded = time.time()
    while True:
        try:
            st = request(root / "run" / "control.sock", {"op": "status"})
            break
        except OSError:
            if sched.poll() is not None or time.time() > t_first:
                raise SystemExit("scheduler did not come up in time; "
                                 + (root / "scheduler.log").read_text()[-2000:]) from None
            time.sleep(0.2)
    print(f"scheduler up with {st['jobs']} jobs after {time.time() - loaded:.1f}s; "
          f"first fire in {t_first - time.time():.1f}s")
    return sched, f"http://127.0.0.1:{port}"


def describe(agents: list[LocalAgent]) -> None:
    async def one(a: LocalAgent) -> dict[str, Any]:
        c = AgentClient(a.name, a.url, TOKEN)
        try:
            await a.wait_ready(c)
            return await c.health()
        finally:
            await c.close()

    for a in agents:
        h = asyncio.run(one(a))
        print(f"agent {a.name}: uid {os.geteuid()}, jobs as the default user "
              f"({'nobody' if os.geteuid() == 0 else 'the agent account'}), "
              f"containment {h.get('cgroups', {}).get('kind')}")


def report(label: str, late: list[float], floor: list[float] | None) -> None:
    if not late:
        print(f"  {label}: no run started")
        return
    line = (f"  {label}: {len(late)} runs, p50 {pct(late, 50) * 1e3:.1f} ms, "
            f"p99 {pct(late, 99) * 1e3:.1f} ms, max {max(late) * 1e3:.1f} ms")
    if floor:
        line += (f"; floor p50 {pct(floor, 50) * 1e3:.1f} ms, p99 {pct(floor, 99) * 1e3:.1f}"
                 f" ms; ratio p50 {pct(late, 50) / pct(floor, 50):.2f}x, p99 "
                 f"{pct(late, 99) / pct(floor, 99):.2f}x (goal p99 <= 1.5x)")
    print(line)


def out_of_order(runs: list[dict[str, Any]]) -> int:
    """Runs that started before some run of an earlier nominal second on the same agent."""
    count = 0
    by_agent: dict[str, list[tuple[datetime, datetime]]] = defaultdict(list)
    for r in runs:
        if r.get("_start") is not None:
            by_agent[r["_agent"].name].append((nominal(r), r["_start"]))
    for pairs in by_agent.values():
        latest_before: datetime | None = None
        seconds = sorted({n for n, _ in pairs})
        starts = defaultdict(list)
        for n, s in pairs:
            starts[n].append(s)
        for sec in seconds:
            if latest_before is not None:
                count += sum(1 for s in starts[sec] if s < latest_before)
            top = max(starts[sec])
            latest_before = top if latest_before is None else max(latest_before, top)
    return count


def main() -> None:  # noqa: C901, PLR0912 - the benchmark's driver: both modes (bursts, sustained) set up, measured and reported in order
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", type=int, default=10_000, help="jobs loaded (padding included)")
    ap.add_argument("--bursts", default="100,300,1000", help="burst sizes (burst mode)")
    ap.add_argument("--repeat", type=int, default=2, help="bursts of each size")
    ap.add_argument("--rate", type=int, help="sustained mode: fires per second")
    ap.add_argument("--seconds", type=int, default=5, help="sustained mode: seconds of fires")
    ap.add_argument("--drain", type=float, default=5.0,
                    help="sustained mode: seconds to wait after the last fire before counting")
    ap.add_argument("--lead", type=int, default=45, help="seconds to load before the first fire")
    args = ap.parse_args()
    workers = 2  # one per agent
    t0 = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=args.lead)
    # (floor burst size or 0, when to measure it), and the slots of fires
    floors: list[tuple[int, float]] = []
    slots: list[tuple[datetime, int]] = []
    if args.rate:
        slots = [(t0 + timedelta(seconds=k), args.rate) for k in range(args.seconds)]
    else:
        t = t0
        for n in (int(x) for x in args.bursts.split(",")):
            for _ in range(args.repeat):
                floors.append((n, t.timestamp() - 2.5))  # done before the dispatch lead
                slots.append((t, n))
                t += timedelta(seconds=drain_time(n) + 3)
    with tempfile.TemporaryDirectory(prefix="hasched-late-") as tmp:
        root = Path(tmp)
        agents = [LocalAgent(root, "l1"), LocalAgent(root, "l2")]
        jobs = root / "jobs"
        jobs.mkdir()
        write_jobs(jobs / "bench.toml", slots, max(args.jobs, sum(n for _, n in slots)), t0)
        floor_of: dict[datetime, list[float]] = {}
        behind: list[float] = []
        try:
            describe(agents)
            sched, url = start_scheduler(root, agents, jobs, t0.timestamp())
            try:
                if args.rate:
                    wait_until(t0.timestamp() - 3)
                    floor_of[t0] = spawnfloor.burst(args.rate, workers)
                    end = slots[-1][0].timestamp() + 1
                    while time.time() < end + args.drain:
                        h = health(url)
                        behind.append(h.get("behind_seconds") or 0.0)
                        time.sleep(0.5)
                else:
                    for (n, at), (slot, _) in zip(floors, slots, strict=True):
                        wait_until(at)
                        floor_of[slot] = spawnfloor.burst(n, workers)
                    wait_until(slots[-1][0].timestamp() + drain_time(slots[-1][1]))
                final_health = health(url)
                runs = asyncio.run(agent_runs(agents, t0 - timedelta(seconds=1)))
                for r in runs:
                    r["_start"] = job_start(r)
            finally:
                os.killpg(sched.pid, signal.SIGTERM)
                sched.wait(60)
        finally:
            for a in agents:
                a.stop()
            time.sleep(2)
            for a in agents:  # the cgroups of runs that ended after their agent stopped
                containment.prepare(a.name, str(a.dir / "state")).remove(kill=True)
    measured = [r for r in runs if nominal(r) < slots[-1][0] + timedelta(seconds=1)]
    expected = sum(n for _, n in slots)
    started = [r for r in measured if r["_start"] is not None]
    print(json.dumps({"fires_expected": expected, "fires_on_agents": len(measured),
                      "fires_started": len(started),
                      "fires_not_started": expected - len(started),
                      "waiting_on_agents": sum(1 for r in measured if r["started_at"] is None)}))
    if args.rate:
        late = [(r["_start"] - nominal(r)).total_seconds() for r in started]
        agent_late = [(parse_time(r["started_at"]) - nominal(r)).total_seconds()
                      for r in measured if r["started_at"]]
        print(f"sustained {args.rate} fires/s for {args.seconds}s, counted {args.drain:g}s "
              "after the last:")
        report("start (job's process)", late, floor_of[t0])
        report("agent started_at", agent_late, None)
        print(f"  out of nominal order on an agent: {out_of_order(started)}; scheduler's "
              f"behind_seconds: max {max(behind, default=0):.2f}, at the end "
              f"{final_health.get('behind_seconds')}; overloaded at the end: "
              f"{final_health.get('overloaded')}")
        return
    by_size: dict[int, tuple[list[float], list[float], list[float]]] = defaultdict(
        lambda: ([], [], []))
    for slot, n in slots:
        late, agent_late, floor = by_size[n]
        floor += floor_of[slot]
        for r in started:
            if nominal(r) == slot:
                late.append((r["_start"] - slot).total_seconds())
                if r["started_at"]:
                    agent_late.append((parse_time(r["started_at"]) - slot).total_seconds())
    for n, (late, agent_late, floor) in by_size.items():
        print(f"bursts of {n} fires (x{args.repeat}):")
        report("start (job's process)", late, floor)
        report("agent started_at     ", agent_late, floor)
    print(f"out of nominal order on an agent: {out_of_order(started)}")


if __name__ == "__main__":
    main()
