"""The hasched_resources role builds the configuration offline and applies one difference: in
check mode it shows the difference and changes nothing, and a configuration that pcs refuses
half-way leaves the live CIB exactly as it was."""

from __future__ import annotations

import json

import pytest

from .conftest import playbook, ssh

pytestmark = pytest.mark.lab


def _configuration() -> str:
    return ssh("node1", "cibadmin --query --scope configuration").stdout


def test_check_diff_shows_the_change_and_applies_nothing(cluster):
    before = _configuration()
    res = playbook("--check", "--diff", "-e", json.dumps({"hasched_resource_stickiness": 150}))
    assert res.returncode == 0, res.stdout[-3000:]
    assert 'value="150"' in res.stdout, "the difference was not shown"
    assert "resource-stickiness" in res.stdout, res.stdout[-3000:]
    assert _configuration() == before


def test_a_refused_setting_leaves_the_cluster_as_it_was(cluster):
    before = _configuration()
    # pcs refuses the interval while building the copy, after it has already deleted and
    # recreated the VIP and the scheduler in it: none of that reaches the live CIB.
    res = playbook("-e", json.dumps({"hasched_scheduler_monitor_timeout": "not-a-duration"}))
    assert res.returncode != 0, res.stdout[-3000:]
    assert "not-a-duration" in res.stdout, res.stdout[-3000:]
    assert _configuration() == before
