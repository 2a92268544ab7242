"""The lab for the cluster tests: brought up and provisioned once per session, then torn down.

If a lab is already up and answering on the VIP (e.g. after `make lab`), it is reused and left
running. After setup the test process joins the lab's client namespace, so testinfra's ssh, HTTP
requests and ansible-playbook all reach the lab network (and nothing else).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # `tests.lab` from the repo root

from tests.lab import lab  # noqa: E402
from tests.lab.bmc import join_netns  # noqa: E402
from tests.lab.config import CLIENT_NS, INVENTORY_DIR, REPO_ROOT, VIP  # noqa: E402
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
