"""What one run costs its supervisor, by how the run is contained and whose account it runs as.

    .venv/bin/python bench/run_cost.py [--runs 200]

Each run is what the agent's launcher does: fork, then the supervisor runs `true` to the end
(result.json published). Measured per run: wall time and CPU (the supervisor and its job, from
wait4's rusage), medians over --runs, the configurations interleaved run by run so that the
machine's other load falls on all of them alike. Figures, no assertions:

  process-group, as agent   the baseline: no cgroup, posix_spawn (the path before cgroups)
  cgroup, as agent          the run's own cgroup: mkdir, enter, leave, empty check, rmdir
  cgroup + limits           the same with memory_max and cpu_weight written
  cgroup, as nobody         the default account under root: the job is started by Popen
Needs root for the cgroup and nobody rows (skipped otherwise).
"""

from __future__ import annotations

import argparse
import os
import pwd
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from scheduler.agent import containment, spawn, supervise  # noqa: E402


def one_run(rundir: str, spec: dict) -> tuple[float, float]:
    """(wall s, CPU s) of one forked supervisor running its job to the end."""
    t0 = time.monotonic()
    pid = os.fork()
    if pid == 0:
        os.setsid()
        code = 1
        try:
            os.mkdir(rundir, 0o700)
            code = supervise.supervise(rundir, spec)
        finally:
            os._exit(code)
    _, status, usage = os.wait4(pid, 0)
    wall = time.monotonic() - t0
    assert os.waitstatus_to_exitcode(status) == 0
    return wall, usage.ru_utime + usage.ru_stime


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=200)
    args = ap.parse_args()
    me = pwd.getpwuid(os.getuid()).pw_name
    spawn.launcher_account = pwd.getpwuid(os.getuid())
    with tempfile.TemporaryDirectory(prefix="hasched-runcost-") as tmp:
        plan = containment.prepare("bench", tmp)
        base = {"job": "bench", "attempt": 1, "epoch": 1, "command": ["true"], "env": {},
                "output_limit": 1 << 20, "kill_grace": 1.0, "allow_agent_account": True,
                "default_user": me}
        configs = {"process-group, as agent": base | {"cgroup": {"kind": "process-group"}}}
        if plan.kind == "cgroup2":
            configs["cgroup, as agent"] = base | {"cgroup": plan.to_spec()}
            if {"memory", "cpu"} <= set(plan.limits()):
                configs["cgroup + limits"] = configs["cgroup, as agent"] | {
                    "memory_max": 256 << 20, "cpu_weight": 50}
            if os.geteuid() == 0:
                configs["cgroup, as nobody"] = configs["cgroup, as agent"] | {
                    "default_user": "nobody"}
        else:
            print(f"no cgroup rows: {plan.note}")
        walls: dict[str, list[float]] = {k: [] for k in configs}
        cpus: dict[str, list[float]] = {k: [] for k in configs}
        for i in range(args.runs):
            for name, spec in configs.items():
                rundir = os.path.join(tmp, f"{len(walls[name])}-{abs(hash(name))}")
                wall, cpu = one_run(rundir, spec | {"run_id": f"r{i}"})
                walls[name].append(wall)
                cpus[name].append(cpu)
        plan.remove(kill=True)
    print(f"{args.runs} runs of `true` each, interleaved; medians (rusage of supervisor + job):")
    base_wall = statistics.median(walls["process-group, as agent"])
    for name in configs:
        w, c = statistics.median(walls[name]), statistics.median(cpus[name])
        print(f"  {name:26s} wall {w * 1e3:6.2f} ms ({w / base_wall:4.2f}x)  CPU {c * 1e3:6.2f} ms")
    print(f"  (max RSS of this process: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss} KiB)")


if __name__ == "__main__":
    main()
