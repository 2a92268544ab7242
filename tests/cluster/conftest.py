"""The lab for the cluster tests: brought up and provisioned once per session, then torn down.

If a lab is already up and answering on the VIP (e.g. after `make lab`), it is reused and left
running. After setup the test process joins the lab's client namespace, so testinfra's ssh, HTTP
requests and ansible-playbook all reach the lab network (and nothing else).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import urllib.request
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # `tests.lab` from the repo root

from tests.lab import lab, power  # noqa: E402
from tests.lab.bmc import join_netns  # noqa: E402
from tests.lab.config import CLIENT_NS, INVENTORY_DIR, REPO_ROOT, STATE_DIR, VIP, node  # noqa: E402
from tests.lab.inventory import SSH_CONFIG  # noqa: E402

# The venv running pytest (wherever the checkout and its venv are), not a fixed path.
ANSIBLE_PLAYBOOK = str(Path(sys.executable).parent / "ansible-playbook")
API = f"http://{VIP}:8480"


def health(timeout: float = 3) -> dict | None:
    try:
        with urllib.request.urlopen(f"{API}/health", timeout=timeout) as resp:
            return json.loads(resp.read())
    except (OSError, ValueError):
        return None


def playbook(*extra: str, inventory: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [ANSIBLE_PLAYBOOK, "-i", inventory or str(INVENTORY_DIR), "site.yml", *extra],
        cwd=Path(REPO_ROOT) / "ansible", capture_output=True, text=True)


def lab_qdevice_host() -> str:
    """The quorum device's host the lab was brought up with (HASCHED_LAB_QUORUM), "" for none."""
    hosts = yaml.safe_load((INVENTORY_DIR / "hosts.yml").read_text())
    return hosts["all"]["vars"]["pacemaker_cluster_qdevice_host"]


def wait_for(what: str, check: Callable[[], object], timeout: float = 240,
             every: float = 1.0) -> object:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(every)


def _vip_answers_in_client_ns() -> bool:
    code = ("import urllib.request,sys;"
            f"urllib.request.urlopen('{API}/health', timeout=3)")
    return subprocess.run(["ip", "netns", "exec", CLIENT_NS, "python3", "-c", code],
                          capture_output=True).returncode == 0


@pytest.fixture(scope="session")
def cluster() -> Iterator[None]:
    reuse = (INVENTORY_DIR / "hosts.yml").exists() and _vip_answers_in_client_ns()
    if not reuse:
        lab.up()  # in the host's namespace: the wheelhouse build may need PyPI
    join_netns(CLIENT_NS)
    try:
        if not reuse:
            res = playbook()
            assert res.returncode == 0, f"site.yml failed:\n{res.stdout[-4000:]}"
        wait_for("the scheduler to answer on the VIP", health, timeout=180)
        yield
    finally:
        # A lab this session built goes, also when provisioning failed (CI must not leak it);
        # HASCHED_LAB_KEEP=1 keeps it for a look.
        if not reuse and os.environ.get("HASCHED_LAB_KEEP") != "1":
            lab.down()


def ssh(node: str, *cmd: str, check: bool = True) -> subprocess.CompletedProcess:
    res = subprocess.run(["ssh", "-F", str(SSH_CONFIG), node, *cmd], capture_output=True,
                         text=True, timeout=120)
    if check and res.returncode != 0:
        pytest.fail(f"{node}: {' '.join(cmd)} failed: {res.stderr.strip()}")
    return res


@pytest.fixture(scope="session")
def hosts(cluster):
    import testinfra

    return {n: testinfra.get_host(f"ssh://{n}", ssh_config=str(SSH_CONFIG))
            for n in ("node1", "node2", "node3")}


def both_online() -> bool:
    res = ssh("node1", "pcs", "status", "nodes", check=False)
    return res.returncode == 0 and bool(re.search(r"Online: node1 node2\s*$", res.stdout, re.M))


def done_with(victim: str, survivor: str) -> bool:
    """The survivor's cluster has finished with a node that went away: it shows it offline and
    clean, no fencing of it is pending and the DC is idle.

    Until then the survivor may still fence the victim on its own (for the membership loss that
    follows a `pcs stonith fence`, say), and a node powered on too early is powered off again.
    """
    res = ssh(survivor, "crm_mon", "-1", "--output-as=xml", "--include=nodes,fencing-pending",
              check=False)
    if res.returncode != 0:
        return False
    root = ET.fromstring(res.stdout)
    gone = root.find(f"nodes/node[@name='{victim}']")
    if gone is None or gone.get("online") != "false" or gone.get("unclean") != "false":
        return False
    if root.find("fence_history/fence_event[@status='pending']") is not None:
        return False
    dc = ssh(survivor, "crmadmin -q -S $(crmadmin -q -D 2>&1) 2>&1", check=False)  # one shell line
    return dc.stdout.strip() == "S_IDLE"


def power_back_on(victim: str, survivor: str) -> None:
    """Power a crashed or fenced node on, as an admin would: once the cluster is done with it."""
    if not power.is_on(node(victim)):
        wait_for(f"{survivor} to be done with {victim}", lambda: done_with(victim, survivor), 120)
        lab.poweron(node(victim))
    wait_for(f"{victim} to rejoin", both_online, 240, every=3)


def _lab_report() -> str:
    """What a failed lab test needs to be understood from CI's output alone."""
    lines = [lab.status()]
    for name in ("node1", "node2"):  # the view of the first node that answers
        res = ssh(name, "crm_mon -1 -r; stonith_admin --history '*' --verbose | tail -8",
                  check=False) if power.is_on(node(name)) else None
        if res is not None and res.returncode == 0:
            lines += [f"--- {name}: crm_mon, fencing history", res.stdout.strip()]
            break
    for name in ("node1", "node2", "node3"):
        console = STATE_DIR / "nodes" / name / "console.log"
        if console.exists():
            tail = console.read_text(errors="replace").splitlines()[-4:]
            lines += [f"--- {name}: console.log (last lines)", *tail]
    return "\n".join(lines)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    if report.failed and call.when == "call" and "cluster" in item.fixturenames:
        try:
            report.sections.append(("lab state at the failure", _lab_report()))
        except Exception as exc:  # a report must never hide the failure it reports
            report.sections.append(("lab state at the failure", f"unavailable: {exc}"))
    return report
