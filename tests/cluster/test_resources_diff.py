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


def test_a_malformed_timeout_is_refused_by_name_and_changes_nothing(cluster):
    # pcs -f itself takes any text as a timeout (this test applied one before the role checked).
    before = _configuration()
    res = playbook("-e", json.dumps({"hasched_scheduler_monitor_timeout": "not-a-duration"}))
    assert res.returncode != 0, res.stdout[-3000:]
    assert ('hasched_scheduler_monitor_timeout: "not-a-duration" is not a Pacemaker time'
            in res.stdout), res.stdout[-3000:]
    assert _configuration() == before
