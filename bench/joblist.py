"""GET /v1/jobs with 50,000 jobs, and /health latency while it is answered.

    .venv/bin/python bench/joblist.py [--jobs 50000] [--lists 5] [--tree DIR]

A real `hasched scheduler run` (standby: every job's next fire is computed for the answer, the
dearer path) on loopback with --jobs job definitions (bench/scale.py's mix). Measured by this
process with aiohttp: /health latency with no other load (the baseline), then --lists GET
/v1/jobs one after the other while /health is asked every 10 ms. --tree runs the scheduler of
another source tree (e.g. an older commit's, to compare). Targets: list < 1 s, /health < 50 ms.
No assertions.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent))
from scale import generate  # noqa: E402
from throughput import ROOT, free_port  # noqa: E402

TOKEN = "bench-api-token-0123456789abcdef0123456789"
AGENT_TOKEN = "bench-agent-token-0123456789abcdef0123456789"
TARGET_LIST, TARGET_HEALTH = 1.0, 0.050


def pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


def ms(values: list[float]) -> str:
    return (f"p50 {pct(values, 50) * 1000:7.1f} ms  p99 {pct(values, 99) * 1000:7.1f} ms  "
            f"max {max(values) * 1000:7.1f} ms  ({len(values)} requests)")


def write_config(root: Path, port: int) -> Path:
    (root / "api-tokens").write_text(TOKEN + "\n")
    (root / "agent.token").write_text(AGENT_TOKEN + "\n")
    for name in ("api-tokens", "agent.token"):
        (root / name).chmod(0o600)
    lines = ["[scheduler]", f'listen = "127.0.0.1:{port}"', f'state_dir = "{root / "state"}"',
             f'run_dir = "{root / "run"}"', f'jobs_dir = "{root / "jobs"}"',
             f'api_tokens_file = "{root / "api-tokens"}"', 'log_level = "warning"', ""]
    for i in range(10):  # the agents scale.py's jobs name; standby never calls them
        lines += [f"[agents.agent{i}]", f'url = "http://127.0.0.1:{free_port()}"',
                  f'token_file = "{root / "agent.token"}"', ""]
    config = root / "scheduler.toml"
    config.write_text("\n".join(lines))
    return config


async def timed(session: aiohttp.ClientSession, url: str, **kw: object) -> tuple[float, int]:
    start = time.perf_counter()
    async with session.get(url, **kw) as resp:
        body = await resp.read()
        resp.raise_for_status()
    return time.perf_counter() - start, len(body)


async def measure(base: str, lists: int) -> None:
    auth = {"Authorization": f"Bearer {TOKEN}"}
    timeout = aiohttp.ClientTimeout(total=3600)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        for _ in range(600):  # the API listens a little after the control socket
            try:
                await timed(session, f"{base}/health")
                break
            except aiohttp.ClientError:
                await asyncio.sleep(0.1)
        idle = []
        for _ in range(200):
            idle.append((await timed(session, f"{base}/health"))[0])
            await asyncio.sleep(0.01)
        listing: list[float] = []
        # The probe is a process of its own: reading a 29 MB answer here would hold up its
        # timer in this process and charge the scheduler for it.
        results: multiprocessing.Queue = multiprocessing.Queue()
        stop = multiprocessing.Event()
        probe = multiprocessing.Process(target=health_probe, args=(base, stop, results))
        probe.start()
        await asyncio.sleep(0.5)
        size = 0
        for _ in range(lists):
            seconds, size = await timed(session, f"{base}/v1/jobs", headers=auth)
            listing.append(seconds)
        stop.set()
        busy = results.get()
        probe.join()
    print(f"/health, no other load (baseline):  {ms(idle)}")
    print(f"GET /v1/jobs ({size / 1e6:.1f} MB answer):   " + "  ".join(
        f"{s:.2f} s" for s in listing) + f"   median {statistics.median(listing):.2f} s"
        f"   target < {TARGET_LIST:g} s")
    print(f"/health during the listings:        {ms(busy)}   target < "
          f"{TARGET_HEALTH * 1000:g} ms; = {pct(busy, 99) / pct(idle, 99):.1f} x baseline p99")


def health_probe(base: str, stop: Any, results: Any) -> None:
    """In a child process: /health every 10 ms until `stop`; the latencies to `results`."""
    async def probe() -> list[float]:
        busy = []
        async with aiohttp.ClientSession() as session:
            while not stop.is_set():
                busy.append((await timed(session, f"{base}/health"))[0])
                await asyncio.sleep(0.01)
        return busy

    results.put(asyncio.run(probe()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=50_000)
    parser.add_argument("--lists", type=int, default=5)
    parser.add_argument("--tree", type=Path, default=ROOT, help="source tree of the scheduler")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="hasched-joblist-") as tmp:
        root = Path(tmp)
        (root / "jobs").mkdir()
        generate(root / "jobs", args.jobs, max(1, args.jobs // 1000))
        port = free_port()
        config = write_config(root, port)
        log = open(root / "scheduler.log", "ab")  # noqa: SIM115 - handed to the child
        started = time.perf_counter()
        sched = subprocess.Popen([sys.executable, "-m", "scheduler", "scheduler", "run",
                                  "--config", str(config), "--role", "standby"],
                                 stdout=log, stderr=log, start_new_session=True,
                                 cwd=str(args.tree))
        log.close()
        try:
            asyncio.run(measure(f"http://127.0.0.1:{port}", args.lists))
        finally:
            os.killpg(sched.pid, signal.SIGTERM)
            sched.wait(60)
        print(f"{args.jobs} jobs, scheduler from {args.tree}, whole run "
              f"{time.perf_counter() - started:.1f} s")
        if sched.returncode not in (0, -signal.SIGTERM):
            print((root / "scheduler.log").read_text()[-2000:])


if __name__ == "__main__":
    main()
