"""Load and plan 100,000 job definitions: wall time and peak memory against a tomllib baseline.

    python bench/scale.py [--jobs 100000] [--files 100]

Each measurement runs in its own subprocess so that its peak RSS is its own. Figures only.
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
from pathlib import Path

TARGET_SECONDS = 5.0
TARGET_RSS_MB = 300.0

SCHEDULES = ["*/5 * * * *", "0 * * * *", "30 2 * * *", "0 9 * * mon-fri", "15 */4 * * *",
             "0 0 1 * *", "@daily", "*/15 8-18 * * 1-5", "45 23 * * sun", "0 6,18 * * *"]
EVERIES = ["30s", "5m", "1h", "90m", "1d"]
ZONES = ["UTC", "Europe/Berlin", "America/New_York", "Asia/Tokyo", "Australia/Sydney"]


def generate(directory: Path, jobs: int, files: int) -> None:
    rng = random.Random(42)
    per_file = jobs // files
    for f in range(files):
        chunks = []
        for j in range(per_file):
            name = f"job-{f:03d}-{j:05d}"
            if rng.random() < 0.7:
                when = f'schedule = "{rng.choice(SCHEDULES)}"'
            else:
                when = f'every = "{rng.choice(EVERIES)}"'
            chunks.append(
                f'[job.{name}]\ncommand = ["/usr/local/bin/task", "{name}"]\n{when}\n'
                f'timezone = "{rng.choice(ZONES)}"\nagent = "agent{j % 10}"\n'
                f'timeout = "1h"\nretries = {{ count = 2, delay = "1m" }}\n')
        (directory / f"jobs-{f:03d}.toml").write_text("\n".join(chunks))


def measure(phase: str, directory: str) -> dict:
    """Run in a child process: one phase, then its wall seconds and peak RSS."""
    import resource
    import time
    from datetime import UTC, datetime

    start = time.perf_counter()
    figures = {}
    if phase.startswith("parse:"):
        parser = __import__(phase.removeprefix("parse:"))
        for path in sorted(Path(directory).glob("*.toml")):
            parser.loads(path.read_text())
    else:
        from scheduler.jobfiles import load_jobs_dir
        from scheduler.planner import FirePlan

        agents = {f"agent{i}" for i in range(10)}
        jobs, errors = load_jobs_dir(directory, agents=agents)
        loaded = time.perf_counter()
        plan = FirePlan()
        plan.load(jobs, datetime(2026, 11, 25, 12, 0, 7, tzinfo=UTC))
        figures.update(jobs=len(jobs), errors=len(errors), planned=len(plan),
                       load_seconds=loaded - start, plan_seconds=time.perf_counter() - loaded)
    figures["seconds"] = time.perf_counter() - start
    figures["rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return figures


def child(phase: str, directory: str) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", phase, directory],
                         check=True, capture_output=True, text=True).stdout
    return json.loads(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--files", type=int, default=100)
    parser.add_argument("--child", nargs=2, metavar=("PHASE", "DIR"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(*args.child)))
        return
    with tempfile.TemporaryDirectory(prefix="hasched-bench-") as tmp:
        generate(Path(tmp), args.jobs, args.files)
        base = child("parse:tomllib", tmp)
        from scheduler.tomlsrc import tomllib as used
        ours = child(f"parse:{used.__name__}", tmp)
        full = child("load+plan", tmp)
    print(f"{args.jobs} jobs in {args.files} files")
    print(f"  stdlib tomllib parse (baseline): {base['seconds']:6.2f} s   "
          f"peak RSS {base['rss_mb']:6.1f} MB")
    print(f"  {used.__name__} parse (the parser used): {ours['seconds']:6.2f} s   "
          f"= {ours['seconds'] / base['seconds']:.2f} x baseline")
    print(f"  load_jobs_dir:                   {full['load_seconds']:6.2f} s   "
          f"({full['jobs']} jobs, {full['errors']} errors)")
    print(f"  FirePlan.load (first fires):     {full['plan_seconds']:6.2f} s   "
          f"({full['planned']} planned)")
    print(f"  load + plan:                     {full['seconds']:6.2f} s   "
          f"= {full['seconds'] / base['seconds']:.2f} x baseline   target <= {TARGET_SECONDS} s")
    print(f"  peak RSS (load + plan process):  {full['rss_mb']:6.1f} MB   "
          f"= {full['rss_mb'] / base['rss_mb']:.2f} x baseline   target <= {TARGET_RSS_MB} MB")


if __name__ == "__main__":
    main()
