"""The primitive layout (`hasched_scheduler_promotable: false`): the VIP and one scheduler in a
group, a cold standby. site.yml switches a running cluster to it and back; in it, a crash of the
scheduler's node fails over as in the default layout, and a second run changes nothing."""

from __future__ import annotations

import json
import re
import time

import pytest

from tests.lab import lab
from tests.lab.config import node

from .conftest import health, playbook, power_back_on, ssh, wait_for
from .test_failover import holder

pytestmark = pytest.mark.lab

PRIMITIVE = json.dumps({"hasched_scheduler_promotable": False})
# The role's recurring monitors run at depth 10: a hung daemon, or a primitive left standby, fails.
DEEP_MONITOR = ("//primitive[@id='hasched-scheduler']/operations/op[@name='monitor']"
                "//nvpair[@name='OCF_CHECK_LEVEL'][@value='10']")


def _cib_has(xpath: str) -> bool:
    return ssh("node1", f'cibadmin --query --xpath "{xpath}"', check=False).returncode == 0


def _changed(res) -> list[str]:
    assert res.returncode == 0, res.stdout[-3000:]
    return re.findall(r"changed=(\d+)", res.stdout[res.stdout.index("PLAY RECAP"):])


def _active_on_vip() -> bool:
    return (health(timeout=1) or {}).get("role") == "active"


def test_primitive_layout_switch_failover_and_back(cluster):
    try:
        assert any(c != "0" for c in _changed(playbook("-e", PRIMITIVE))), \
            "switching to the primitive layout changed nothing"
        assert _cib_has("//group[@id='hasched']/primitive[@id='hasched-scheduler']")
        assert not _cib_has("//clone[@id='hasched-scheduler-clone']")
        assert _cib_has(DEEP_MONITOR)
        wait_for("the scheduler active on the VIP (primitive)", _active_on_vip, 180)
        assert all(c == "0" for c in _changed(playbook("-e", PRIMITIVE))), \
            "a second run in the primitive layout changed something"

        victim = holder()
        assert victim in ("node1", "node2"), f"the group runs nowhere ({victim})"
        survivor = "node2" if victim == "node1" else "node1"
        crashed = time.monotonic()
        lab.crash(node(victim))
        wait_for("an active scheduler on the VIP after the crash", _active_on_vip, 240, every=0.2)
        print(f"\nprimitive layout: crash of {victim} -> scheduler answering on the VIP from "
              f"{survivor}: {time.monotonic() - crashed:.1f} s")
        assert holder() == survivor
        power_back_on(victim, survivor)
    finally:
        res = playbook()  # back to the default layout, whatever happened above
    assert res.returncode == 0, res.stdout[-3000:]
    assert _cib_has("//clone[@id='hasched-scheduler-clone']")
    assert not _cib_has("//group[@id='hasched']")
    assert _cib_has(DEEP_MONITOR)
    wait_for("the scheduler active on the VIP (promotable)", _active_on_vip, 180)
