"""Bad inputs stop site.yml early, with a message naming what is wrong, and change nothing."""

from __future__ import annotations

import json
import re

import pytest
import yaml

from tests.lab.config import INVENTORY_DIR

from .conftest import playbook

pytestmark = pytest.mark.lab


def _stopped_early(res, message: str) -> None:
    assert res.returncode != 0, "the playbook succeeded"
    assert message in res.stdout, res.stdout[-3000:]
    recap = res.stdout[res.stdout.index("PLAY RECAP"):]
    assert all(c == "0" for c in re.findall(r"changed=(\d+)", recap)), recap


def test_short_hacluster_password(cluster):
    res = playbook("-e", json.dumps({"pacemaker_cluster_hacluster_password": "short"}))
    _stopped_early(res, "pacemaker_cluster_hacluster_password: must be set")


def test_wrong_hacluster_password(cluster):
    res = playbook("-e", json.dumps({"pacemaker_cluster_hacluster_password": "not-the-password",
                                     "pacemaker_cluster_hacluster_password_manage": False}))
    _stopped_early(res, "pacemaker_cluster_hacluster_password: pcsd on node1 rejected it")


def test_one_node_inventory(cluster, tmp_path):
    inv = yaml.safe_load((INVENTORY_DIR / "hosts.yml").read_text())
    del inv["all"]["children"]["cluster"]["hosts"]["node2"]
    (tmp_path / "hosts.yml").write_text(yaml.safe_dump(inv))
    (tmp_path / "group_vars").symlink_to(INVENTORY_DIR / "group_vars")
    res = playbook(inventory=str(tmp_path))
    _stopped_early(res, "inventory group 'cluster': has 1 host(s) (node1); a cluster needs at")


def test_bad_fencing_address(cluster):
    res = playbook("-e", json.dumps({"pacemaker_cluster_ipmi_address": "192.168.56.99"}))
    _stopped_early(res, "fencing probe from node1 to BMC 192.168.56.99")
