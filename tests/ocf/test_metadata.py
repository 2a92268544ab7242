"""Meta-data, validate-all and logging of the agent; no daemon, no cluster."""

from __future__ import annotations

from pathlib import Path

import pytest
from lxml import etree

from .conftest import Setup, run_agent

pytestmark = pytest.mark.ocf

OCF_RNG = Path("/usr/share/pcs/data/ocf-1.1.rng")


def test_meta_data_is_valid_ocf_1_1(agent) -> None:
    done = run_agent(agent, "meta-data", {"PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr
    doc = etree.fromstring(done.stdout.encode())
    schema = etree.RelaxNG(etree.parse(str(OCF_RNG)))
    assert schema.validate(doc), schema.error_log
    assert doc.findtext("version") == "1.1"
    params = {p.get("name"): p for p in doc.iter("parameter")}
    assert params["config"].get("required") == "1"
    assert params["log_level"].get("reloadable") == "1"
    assert "&" in doc.findtext("longdesc")  # escaped in the XML, intact once parsed
    actions = {a.get("name") for a in doc.iter("action")}
    assert {"start", "stop", "monitor", "promote", "demote", "notify", "reload", "reload-agent",
            "validate-all", "meta-data"} <= actions


def _write(setup: Setup, text: str) -> Path:
    bad = setup.root / "bad.toml"
    bad.write_text(text)
    return bad


# (parameter overrides or a callable building them, OCF_CHECK_LEVEL, exit code, reason part)
VALIDATE_CASES = [
    ("good", {}, 0, 0, None),
    ("good, level 10", {}, 10, 0, None),
    ("config unset", {"config": ""}, 0, 6, "parameter config is required"),
    ("config relative", {"config": "scheduler.toml"}, 0, 6, "must be an absolute path"),
    ("log_level invalid", {"log_level": "loud"}, 0, 6, "log_level=loud: must be one of"),
    ("config absent", {"config": "/nonexistent/scheduler.toml"}, 0, 5, "no such file"),
    ("hasched absent", {"hasched": "/nonexistent/hasched"}, 0, 5, "no such executable"),
    ("user unknown", {"user": "no-such-user-hasched"}, 0, 2, "no such user"),
    ("config not TOML", lambda s: {"config": str(_write(s, "[scheduler\n"))}, 0, 2, "line 1"),
    ("no [scheduler]", lambda s: {"config": str(_write(s, "[agents]\n"))}, 0, 2, "[scheduler]"),
    ("jobs_dir missing, level 10",
     lambda s: {"config": str(_write(s, s.config.read_text().replace(
         f'{s.root}/jobs', f'{s.root}/nojobs')))}, 10, 2, "jobs_dir"),
    ("jobs_dir missing, level 0 does not look",
     lambda s: {"config": str(_write(s, s.config.read_text().replace(
         f'{s.root}/jobs', f'{s.root}/nojobs')))}, 0, 0, None),
]


@pytest.mark.parametrize("name,params,level,expect,reason", VALIDATE_CASES,
                         ids=[c[0] for c in VALIDATE_CASES])
def test_validate_all(agent, setup, name, params, level, expect, reason) -> None:  # noqa: PLR0913 - pytest passes a fixture or a column of the case table per argument
    overrides = params(setup) if callable(params) else params
    env = setup.env({**setup.params(), **overrides})  # no CRM_meta_*: as pcs runs it
    env["OCF_CHECK_LEVEL"] = str(level)
    done = run_agent(agent, "validate-all", env)
    assert done.returncode == expect, done.stderr
    reasons = [ln for ln in done.stderr.splitlines() if ln.startswith("ocf-exit-reason:")]
    if reason is None:
        assert reasons == []
    else:
        assert len(reasons) == 1 and reason in reasons[0], done.stderr


@pytest.mark.parametrize("ha_debug,expect_debug", [("0", False), ("1", True), ("", False)])
def test_logging_honours_ha_debug_as_a_string(agent, setup, ha_debug, expect_debug) -> None:
    log, debug = setup.root / "ha.log", setup.root / "ha-debug.log"
    env = setup.env(notify_type="post", notify_operation="start")
    env.update(HA_LOGFACILITY="none", HA_LOGFILE=str(log), HA_DEBUGLOG=str(debug),
               HA_debug=ha_debug)
    assert run_agent(agent, "notify", env).returncode == 0
    assert debug.exists() == expect_debug
    if expect_debug:
        assert "notify post-start" in debug.read_text()
    env["OCF_RESKEY_config"] = ""
    done = run_agent(agent, "start", env)
    assert done.returncode == 6
    assert "ERR: parameter config is required" in log.read_text()
    assert done.stderr.strip() == "ocf-exit-reason:parameter config is required"
