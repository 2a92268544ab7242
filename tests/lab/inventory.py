"""Writes the Ansible inventory for the running lab (ansible/inventories/lab/).

hosts.yml carries no secret; group_vars/all/lab_secrets.yml is a symlink to the lab's 0600
secrets file, standing in for a Vault-encrypted vars file. Both are generated, not committed.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from . import nodes
from .config import (
    BMC_IP,
    BMC_USER,
    INVENTORY_DIR,
    NODES,
    QDEVICE_HOST,
    VIP,
    WHEELHOUSE,
    quorum_mode,
)
from .secrets import SECRETS_FILE, SSH_DIR

KNOWN_HOSTS = SSH_DIR / "known_hosts"
SSH_CONFIG = SSH_DIR / "config"


def ssh_options(key: Path) -> list[str]:
    return ["-i", str(key), "-o", f"UserKnownHostsFile={KNOWN_HOSTS}",
            "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes", "-o", "User=root"]


def write(key: Path) -> Path:
    # The host keys were made by the lab, so clients can check them strictly from the start.
    lines = []
    for n in NODES:
        kind, blob = nodes.host_key(n)
        lines.append(f"{n.name},{n.ip} {kind} {blob}")
    KNOWN_HOSTS.write_text("\n".join(lines) + "\n")
    config = [f"Host {' '.join(n.name for n in NODES)}", "  User root", f"  IdentityFile {key}",
              f"  UserKnownHostsFile {KNOWN_HOSTS}", "  StrictHostKeyChecking yes",
              "  BatchMode yes", "  ConnectTimeout 5"]
    config += [f"Host {n.name}\n  HostName {n.ip}" for n in NODES]
    SSH_CONFIG.write_text("\n".join(config) + "\n")

    def host(n):
        return {"ansible_host": n.ip, "pacemaker_cluster_ipmi_address": BMC_IP,
                "pacemaker_cluster_ipmi_port": n.bmc_port}

    inventory = {"all": {
        "vars": {
            "ansible_user": "root",
            "ansible_ssh_private_key_file": str(key),
            "ansible_ssh_common_args": f"-o UserKnownHostsFile={KNOWN_HOSTS} "
                                       "-o StrictHostKeyChecking=yes",
            "ansible_python_interpreter": "/usr/bin/python3",
            "pacemaker_cluster_name": "hasched-lab",
            "pacemaker_cluster_fencing": "ipmilan",
            "pacemaker_cluster_qdevice_host": QDEVICE_HOST if quorum_mode() == "qdevice" else "",
            # A fenced node stays off (until `poweron`): a rebooted container is back in ~6 s,
            # rejoins before the failover transition, and the group never leaves it.
            "pacemaker_cluster_properties": {"stonith-timeout": "60s",
                                             "cluster-recheck-interval": "2min",
                                             "stonith-action": "off"},
            "pacemaker_cluster_ipmi_username": BMC_USER,
            "hasched_vip": VIP,
            "hasched_vip_cidr_netmask": 24,
            "hasched_wheelhouse_dir": str(WHEELHOUSE),
            "hasched_pip_no_index": True,
            "hasched_scheduler_nonlocal_bind": False,  # set by the lab (net.build)
        },
        "children": {
            "cluster": {"hosts": {n.name: host(n) for n in NODES if n.cluster}},
            "workers": {"hosts": {n.name: host(n) for n in NODES if not n.cluster}},
        },
    }}
    INVENTORY_DIR.mkdir(parents=True, exist_ok=True)
    hosts = INVENTORY_DIR / "hosts.yml"
    hosts.write_text("# Written by `python -m tests.lab up`; do not edit.\n"
                     + yaml.safe_dump(inventory, sort_keys=False))
    link = INVENTORY_DIR / "group_vars" / "all" / "lab_secrets.yml"
    link.parent.mkdir(parents=True, exist_ok=True)
    link.unlink(missing_ok=True)
    link.symlink_to(SECRETS_FILE)
    return hosts


def remove() -> None:
    for path in (INVENTORY_DIR / "hosts.yml",
                 INVENTORY_DIR / "group_vars" / "all" / "lab_secrets.yml"):
        path.unlink(missing_ok=True)
