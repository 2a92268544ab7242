"""How the agent reads the machine's cgroups, and the argv of a systemd scope (no systemd here)."""

from __future__ import annotations

import os

import pytest

from scheduler.agent import cgroup, containment

pytestmark = pytest.mark.unit

HYBRID = """\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
50 31 0:40 / /mnt/with\\040space rw - cgroup2 cgroup2 rw,nsdelegate
"""

OWN = """\
4:memory:/process_api/db34
1:cpu,cpuacct:/
0::/
"""


def test_mounts_and_own_cgroups_are_read_from_proc(tmp_path) -> None:
    (tmp_path / "mountinfo").write_text(HYBRID)
    (tmp_path / "cgroup").write_text(OWN)
    found = containment.mounts(str(tmp_path / "mountinfo"))
    assert [(m, t) for m, t, _ in found if t == "cgroup2"] == [
        ("/sys/fs/cgroup/unified", "cgroup2"), ("/mnt/with space", "cgroup2")]
    assert ("/sys/fs/cgroup/memory", "cgroup", {"rw", "memory"}) in found
    assert containment.own_cgroups(str(tmp_path / "cgroup")) == {
        "memory": "/process_api/db34", "cpu": "/", "cpuacct": "/", "": "/"}


def test_a_scope_is_started_by_systemd_run_with_the_limits_and_the_account() -> None:
    plan = {"kind": cgroup.SYSTEMD, "exe": "/usr/bin/systemd-run", "mount": "/sys/fs/cgroup",
            "slice": cgroup.SLICE}
    group, error = cgroup.open_run_group(
        {"cgroup": plan, "memory_max": 64 << 20, "cpu_weight": 50},
        "/var/lib/hasched-agent/output/nightly@2026-12-01T01:30:00Z.1")
    assert error is None and group.wraps_account
    assert group.command(["backup", "--full"], (34, 34)) == [
        "/usr/bin/systemd-run", "--scope", "--quiet", "--collect", "--slice=hasched.slice",
        "--unit=hasched-run-nightly_2026-12-01T01_30_00Z.1", "--uid=34", "--gid=34",
        "-p", "MemoryMax=67108864", "-p", "CPUWeight=50", "--", "backup", "--full"]
    assert group.path == ("/sys/fs/cgroup/hasched.slice/"
                          "hasched-run-nightly_2026-12-01T01_30_00Z.1.scope")


@pytest.mark.parametrize("plan, message", [
    ({"kind": cgroup.PROCESS_GROUP},
     "memory_max: this agent cannot enforce it (it runs jobs without cgroups)"),
    ({"kind": cgroup.CGROUP2, "dir": "/nonexistent-hasched", "home": "/", "kill": True,
      "v2": [], "v1": {}}, "cannot create the run's cgroup: No such file or directory"),
])
def test_a_limit_or_a_cgroup_that_cannot_be_had_is_the_run_s_error(plan, message) -> None:
    _, error = cgroup.open_run_group({"cgroup": plan, "memory_max": 64 << 20}, "/x/run.1")
    assert error == message


def test_a_limit_without_its_controller_is_refused(tmp_path) -> None:
    plan = {"kind": cgroup.CGROUP2, "dir": str(tmp_path), "home": "/", "kill": True,
            "v2": [], "v1": {}}
    group, error = cgroup.open_run_group({"cgroup": plan, "cpu_weight": 50}, "/x/run.1")
    assert error == "cpu_weight: this agent cannot enforce it (no cpu controller for its cgroups)"
    assert not (tmp_path / "run-run.1").exists(), "the cgroup made is removed again"


FAKE_SYSTEMD_RUN = """#!/bin/sh
# What systemd-run --scope does, as far as the agent can tell: the command runs in the scope.
for a in "$@"; do case "$a" in --unit=*) unit=${a#--unit=};; --slice=*) slice=${a#--slice=};;
esac; done
[ -n "$FAIL" ] && { echo "Failed to start transient scope unit: Access denied" >&2; exit 1; }
echo "0::/$slice/$unit.scope"
"""


@pytest.mark.parametrize("fail", [False, True])
def test_systemd_scopes_are_probed_once_and_their_place_is_read(tmp_path, monkeypatch,
                                                                fail) -> None:
    if os.geteuid() != 0:
        pytest.skip("the systemd kind is for an agent running as root")
    fake = tmp_path / "bin" / "systemd-run"
    fake.parent.mkdir()
    fake.write_text(FAKE_SYSTEMD_RUN)
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake.parent}:{os.environ['PATH']}")
    monkeypatch.setenv("FAIL", "1" if fail else "")
    real_isdir = os.path.isdir
    monkeypatch.setattr(os.path, "isdir", lambda p: p == "/run/systemd/system" or real_isdir(p))
    found = [("/sys/fs/cgroup", "cgroup2", {"rw"})]
    plan, why_not = containment._systemd_plan(found)
    if fail:
        assert plan is None
        assert why_not == ("systemd-run --scope failed (status 1): Failed to start transient "
                           "scope unit: Access denied")
    else:
        assert why_not == "" and plan is not None
        assert plan.to_spec() == {"kind": "systemd", "exe": str(fake), "mount": "/sys/fs/cgroup",
                                  "slice": "hasched.slice"}
        assert plan.health() == {"kind": "systemd", "limits": ["memory", "cpu"], "note": None}
