"""The agent under a real single-node Pacemaker (corosync -f + pacemakerd, see conftest)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import urllib.request
from pathlib import Path

import pytest

from .conftest import HASCHED, Setup, daemons_of, promotion_score, sh, wait_for

pytestmark = pytest.mark.ocf

AGENT = "/usr/lib/ocf/resource.d/hasched/scheduler"
PACEMAKER_LOG = Path("/var/log/pacemaker/pacemaker.log")
# The only complaints ocf-tester may make: its ra-api-1.dtd predates OCF 1.1, so xmllint rejects
# 1.1 features (reloadable, select contents, reload-agent). Everything else must pass.
DTD_COMPLAINT = "* rc=4: Your agent produces meta-data which does not conform to ra-api-1.dtd"
DTD_ONLY_1_1 = re.compile(
    r"^-:\d+: element (parameter|content|option|action): validity error : "
    r"(No declaration for attribute reloadable of element parameter"
    r"|Value \"select\" for attribute type of content is not among the enumerated set"
    r"|No declaration for (attribute value of )?element option"
    r"|Element content was declared EMPTY this one has content"
    r"|Value \"reload-agent\" for attribute name of action is not among the enumerated set)$")


EPOCH_ATTR = "hasched-epoch-hasched-jobs"  # the default for the group test's resource


def cib_epoch(attribute: str) -> int | None:
    done = sh("crm_attribute", "--type", "crm_config", "--name", attribute, "--query", "--quiet")
    return int(done.stdout) if done.returncode == 0 and done.stdout.strip().isdigit() else None


def health(host: str, port: int) -> dict | None:
    try:
        with urllib.request.urlopen(f"http://{host}:{port}/health", timeout=5) as r:
            return json.load(r)
    except OSError:
        return None


def pidfile_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def on_lo(ip: str) -> bool:
    return f" {ip}/32 " in sh("ip", "-o", "addr", "show", "dev", "lo").stdout


def log_since(offset: int) -> str:
    with open(PACEMAKER_LOG, "rb") as f:
        f.seek(offset)
        return f.read().decode(errors="replace")


def test_pcs_describes_the_agent(cluster) -> None:
    done = sh("pcs", "resource", "describe", "ocf:hasched:scheduler", check=True)
    assert "ocf:hasched:scheduler - hasched job scheduler" in done.stdout
    assert re.search(r"^\s+config \(required\):", done.stdout, re.M), done.stdout
    assert "OCF_CHECK_LEVEL=10" in done.stdout  # the depth-10 monitor pcs creates by default


@pytest.mark.parametrize("options,expect,reason", [
    ({}, 0, None),
    ({"config": ""}, 6, "parameter config is required"),
    ({"config": "/nonexistent/scheduler.toml"}, 5, "/nonexistent/scheduler.toml: no such file"),
    ({"log_level": "loud"}, 6, "log_level=loud: must be one of"),
], ids=["good", "config unset", "config absent", "bad log_level"])
def test_crm_resource_validate(cluster, setup, options, expect, reason) -> None:
    argv = ["crm_resource", "--validate", "--class", "ocf", "--provider", "hasched",
            "--agent", "scheduler"]
    for key, value in {"config": str(setup.config), **options}.items():
        if value:
            argv += ["--option", f"{key}={value}"]
    done = sh(*argv)
    assert done.returncode == expect, done.stdout + done.stderr
    if reason:
        assert f"ocf-exit-reason:{reason}" in done.stdout + done.stderr
    else:
        assert "returned 0 (ok)" in done.stdout


def test_ocf_tester_passes_but_for_the_dtd(cluster, setup) -> None:
    argv = ["ocf-tester", "-n", "hasched-ocftest"]
    for key, value in setup.params().items():
        argv += ["-o", f"{key}={value}"]
    try:
        done = sh(*argv, AGENT, timeout=600)
    finally:
        sh("crm_attribute", "--type", "crm_config", "--name", "hasched-epoch-hasched-ocftest",
           "--delete")
    out = done.stdout + done.stderr
    complaints = {ln for ln in out.splitlines() if ln.startswith("* rc=")}
    assert complaints == {DTD_COMPLAINT}, out
    validity = [ln for ln in out.splitlines() if "validity error" in ln]
    assert validity and all(DTD_ONLY_1_1.match(ln) for ln in validity), out
    assert "failed 1 tests" in out, out
    assert not daemons_of(setup.config)


def test_group_with_address_restart_after_kill_and_disable(cluster) -> None:
    ip = "127.0.0.77"
    setup = Setup(host=ip, instance="hasched-jobs")
    pidfile = Path("/run/hasched/hasched-jobs.pid")  # the default
    try:
        sh("pcs", "resource", "create", "hasched-vip", "ocf:heartbeat:IPaddr2", f"ip={ip}",
           "cidr_netmask=32", "nic=lo", "--group", "hasched-g", check=True)
        # Defaults for everything but config.
        sh("pcs", "resource", "create", "hasched-jobs", "ocf:hasched:scheduler",
           f"config={setup.config}", "--group", "hasched-g", check=True)
        # /health answers while start is still under way (standby until it is made active).
        first = wait_for("the scheduler active on the group's address", lambda: (
            answer := health(ip, setup.port)) and answer["role"] == "active" and answer,
            timeout=180)
        # A primitive's start raises the cluster-wide epoch too: a restart out-ranks the last.
        assert first["epoch"] >= 1 and cib_epoch(EPOCH_ATTR) == first["epoch"]
        assert on_lo(ip)
        old_pid = pidfile_pid(pidfile)
        assert old_pid and old_pid in [p.pid for p in daemons_of(setup.config)]

        # log_level is reloadable: Pacemaker runs reload-agent, not a restart.
        seen = PACEMAKER_LOG.stat().st_size
        sh("pcs", "resource", "update", "hasched-jobs", "log_level=debug", check=True)
        wait_for("Pacemaker to log a successful reload-agent",
                 lambda: "Result of reload-agent operation for hasched-jobs on node1: ok"
                 in log_since(seen), timeout=180)
        assert pidfile_pid(pidfile) == old_pid

        os.kill(old_pid, signal.SIGKILL)
        wait_for("a fail count for hasched-jobs", lambda: fail_count("hasched-jobs") >= 1,
                 timeout=180)
        again = wait_for("the scheduler active again with a new pid", lambda: (
            pidfile_pid(pidfile) not in (None, old_pid) and (answer := health(ip, setup.port))
            and answer["role"] == "active" and answer), timeout=180)
        assert [p.pid for p in daemons_of(setup.config)] == [pidfile_pid(pidfile)]
        assert again["epoch"] > first["epoch"], (first, again)
        assert cib_epoch(EPOCH_ATTR) == again["epoch"]

        sh("pcs", "resource", "disable", "hasched-g", check=True)
        wait_for("the group to stop", lambda: not daemons_of(setup.config) and not on_lo(ip),
                 timeout=180)
        assert not pidfile.exists()
        assert not setup.socket.exists()
    finally:
        sh("pcs", "resource", "delete", "hasched-g", "--force")
        sh("crm_attribute", "--type", "crm_config", "--name", EPOCH_ATTR, "--delete")
        wait_for("hasched-g gone", lambda: "hasched" not in sh("crm_mon", "-1").stdout,
                 timeout=180)
        setup.cleanup()


def fail_count(resource: str) -> int:
    done = sh("crm_failcount", "--query", "-r", resource, "-N", "node1")
    found = re.search(r"value=(\d+|INFINITY)", done.stdout)
    if not found:
        return 0
    return 1_000_000 if found.group(1) == "INFINITY" else int(found.group(1))


def test_promotable_clone_raises_the_epoch_on_every_promotion(cluster) -> None:
    setup = Setup(instance="hasched-p")
    attribute = "hasched-epoch-hasched-p"

    def role() -> str | None:
        try:
            return setup.ask('{"op": "status"}').get("role")
        except OSError:
            return None

    def ctl_status() -> dict:
        done = subprocess.run([HASCHED, "ctl", "--socket", str(setup.socket), "status"],
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)

    try:
        params = [f"{k}={v}" for k, v in setup.params().items()]
        sh("pcs", "resource", "create", "hasched-p", "ocf:hasched:scheduler", *params,
           "promotable", check=True)
        wait_for("the clone instance to be promoted", lambda: role() == "active", timeout=180)
        check = sh("crm_resource", "--force-check", "-r", "hasched-p")
        assert check.returncode == 8, check.stdout + check.stderr
        # No [replication] in this config: the scores the agent always set (10 promoted).
        assert promotion_score("hasched-p") == 10
        epochs = [cib_epoch(attribute)]
        assert epochs[0] is not None and epochs[0] >= 1
        assert ctl_status()["epoch"] == epochs[0]

        for _ in range(2):
            sh("pcs", "resource", "ban", "hasched-p-clone", "--promoted", check=True)
            wait_for("demotion to standby", lambda: role() == "standby", timeout=180)
            sh("pcs", "resource", "clear", "hasched-p-clone", check=True)
            wait_for("promotion again", lambda: role() == "active", timeout=180)
            epochs.append(wait_for("a higher epoch in the CIB",
                                   lambda: (cib_epoch(attribute) or 0) > epochs[-1] and
                                   cib_epoch(attribute), timeout=60))
            assert ctl_status()["epoch"] == epochs[-1]
        assert epochs == sorted(set(epochs)), epochs
        assert sh("crm_resource", "--force-check", "-r", "hasched-p").returncode == 8
    finally:
        sh("pcs", "resource", "delete", "hasched-p", "--force")
        wait_for("hasched-p stopped", lambda: not daemons_of(setup.config), timeout=180)
        sh("crm_attribute", "--type", "crm_config", "--name", attribute, "--delete")
        setup.cleanup()
