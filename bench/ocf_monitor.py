"""Wall time of ocf:hasched:scheduler actions beside a bare interpreter and ocf:heartbeat:anything.

Installs the agent with resource-agents/install.sh into a temporary OCF root (the shebang it gets
in production), starts a real scheduler through it, and times N runs of each command, all in the
same run. Prints medians and ratios to `python -c pass` with the same interpreter. Needs root.

usage: python bench/ocf_monitor.py [--runs 30] [--python PATH]
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ANYTHING = Path("/usr/lib/ocf/resource.d/heartbeat/anything")
PATH = "/usr/sbin:/usr/bin:/sbin:/bin"


def median_ms(argv: list[str], env: dict[str, str], runs: int, expect: int) -> float:
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        rc = subprocess.run(argv, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL).returncode
        times.append(time.perf_counter() - t0)
        if rc != expect:
            sys.exit(f"{' '.join(argv)} exited {rc}, expected {expect}")
    return statistics.median(times) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--python", default=str(Path(sys.executable)))
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="hasched-ocf-bench-", dir="/tmp"))
    try:
        subprocess.run([str(REPO / "resource-agents" / "install.sh"), "--python", args.python,
                        "--ocf-root", str(work / "ocf")], check=True, stdout=subprocess.DEVNULL)
        agent = str(work / "ocf" / "resource.d" / "hasched" / "scheduler")
        for sub in ("jobs", "state", "run"):
            (work / sub).mkdir()
        (work / "tokens").write_text("bench-token-0123456789abcdef0123456789\n")
        (work / "tokens").chmod(0o600)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        (work / "scheduler.toml").write_text(
            f'[scheduler]\nlisten = "127.0.0.1:{port}"\nstate_dir = "{work}/state"\n'
            f'run_dir = "{work}/run"\njobs_dir = "{work}/jobs"\n'
            f'api_tokens_file = "{work}/tokens"\n')
        ocf = {"PATH": PATH, "OCF_ROOT": "/usr/lib/ocf", "OCF_RESOURCE_INSTANCE": "bench",
               "OCF_RESKEY_CRM_meta_interval": "10000", "OCF_RESKEY_CRM_meta_timeout": "20000",
               "HA_LOGFACILITY": "none", "HA_debug": "0"}
        ours = {**ocf, "OCF_RESKEY_config": f"{work}/scheduler.toml",
                "OCF_RESKEY_pidfile": f"{work}/scheduler.pid",
                "OCF_RESKEY_log_file": f"{work}/scheduler.log"}
        anything = {**ocf, "OCF_RESKEY_binfile": "/bin/sleep", "OCF_RESKEY_cmdline_options": "600",
                    "OCF_RESKEY_pidfile": f"{work}/anything.pid",
                    "OCF_RESKEY_logfile": "/dev/null", "OCF_RESKEY_errlogfile": "/dev/null"}
        subprocess.run([agent, "start"], env={**ours, "OCF_RESKEY_CRM_meta_timeout": "60000"},
                       check=True)
        subprocess.run([str(ANYTHING), "start"], env=anything, check=True,
                       stdout=subprocess.DEVNULL)
        try:
            results = {
                "python -c pass": median_ms([args.python, "-c", "pass"], {"PATH": PATH},
                                            args.runs, 0),
                "scheduler monitor depth 0": median_ms([agent, "monitor"], ours, args.runs, 0),
                "scheduler monitor depth 10": median_ms(
                    [agent, "monitor"], {**ours, "OCF_CHECK_LEVEL": "10"}, args.runs, 0),
                "scheduler meta-data": median_ms([agent, "meta-data"], ours, args.runs, 0),
                "heartbeat:anything monitor": median_ms([str(ANYTHING), "monitor"], anything,
                                                        args.runs, 0),
            }
        finally:
            subprocess.run([agent, "stop"], env=ours, stdout=subprocess.DEVNULL)
            subprocess.run([str(ANYTHING), "stop"], env=anything, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    base = results["python -c pass"]
    print(f"median of {args.runs} runs each; interpreter {args.python} (pid {os.getpid()})")
    print(f"{'command':<30}{'median ms':>10}{'x bare':>8}")
    for name, ms in results.items():
        print(f"{name:<30}{ms:>10.1f}{ms / base:>8.2f}")


if __name__ == "__main__":
    main()
