"""The physical floor of a burst: how long this machine takes to start N trivial processes.

    .venv/bin/python bench/spawnfloor.py [--bursts 100,300,1000] [--workers 2] [--repeat 3]

A burst of N `true` processes started with os.posix_spawn (what a run's supervisor does for
its job), spread over `workers` processes (one per agent: the agents' share of the cores), all
told to go at the same instant. Each process's lateness is the time from that instant until
posix_spawn returned for it (glibc's posix_spawn returns once the child has exec'd). Their
p50/p99 is the floor that bench/lateness.py holds the scheduler's lateness against: nothing
starts N runs sooner than this machine starts N processes. Children are reaped after the
burst, not during it, so reaping costs the burst nothing.
"""

from __future__ import annotations

import argparse
import os
import shutil
import struct
import time

TRUE = shutil.which("true") or "/bin/true"


def pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


def _worker(n: int, go_r: int, out_w: int) -> None:
    """In a forked child: wait for the go time, start n processes, send back their times."""
    go = struct.unpack("d", os.read(go_r, 8))[0]
    env = {"PATH": "/usr/bin:/bin"}
    while (left := go - time.time()) > 0:
        time.sleep(min(left, 0.001) if left < 0.002 else left - 0.001)
    times, pids = [], []
    for _ in range(n):
        pids.append(os.posix_spawn(TRUE, [TRUE], env))
        times.append(time.time() - go)
    for pid in pids:
        os.waitpid(pid, 0)
    data = struct.pack(f"{len(times)}d", *times)
    while data:
        data = data[os.write(out_w, data):]


def burst(n: int, workers: int) -> list[float]:
    """Seconds from the go instant until each of n processes had started."""
    shares = [n // workers + (1 if i < n % workers else 0) for i in range(workers)]
    kids = []
    for share in shares:
        go_r, go_w = os.pipe()
        out_r, out_w = os.pipe()
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                os.close(go_w)
                os.close(out_r)
                _worker(share, go_r, out_w)
                code = 0
            finally:
                os._exit(code)
        os.close(go_r)
        os.close(out_w)
        kids.append((pid, go_w, out_r, share))
    go = time.time() + 0.05  # every worker forked and waiting by then
    for _, go_w, _, _ in kids:
        os.write(go_w, struct.pack("d", go))
        os.close(go_w)
    out: list[float] = []
    for pid, _, out_r, share in kids:
        data = b""
        while len(data) < 8 * share:
            chunk = os.read(out_r, 8 * share - len(data))
            if not chunk:
                break
            data += chunk
        os.close(out_r)
        os.waitpid(pid, 0)
        out += struct.unpack(f"{len(data) // 8}d", data)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bursts", default="100,300,1000", help="burst sizes, comma-separated")
    ap.add_argument("--workers", type=int, default=2, help="processes sharing each burst")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    for n in (int(x) for x in args.bursts.split(",")):
        late: list[float] = []
        for _ in range(args.repeat):
            late += burst(n, args.workers)
            time.sleep(0.5)
        print(f"burst of {n} posix_spawn over {args.workers} workers: "
              f"p50 {pct(late, 50) * 1e3:.1f} ms, p99 {pct(late, 99) * 1e3:.1f} ms, "
              f"last {max(late) * 1e3:.1f} ms")


if __name__ == "__main__":
    main()
