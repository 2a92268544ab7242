"""Property tests: whatever a job file, a configuration file, an API request or a control request
holds, the answer is a clear error or a good result: never a traceback, never a 500, and a
refusal changes nothing."""

from __future__ import annotations

import asyncio
import json
import math
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from click.testing import CliRunner
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from standby import standby_scheduler

from scheduler.api import make_app
from scheduler.cli.main import cli
from scheduler.config import ConfigError, load_agent_config, load_scheduler_config
from scheduler.control import handle_request
from scheduler.daemon import Scheduler
from scheduler.jobfiles import load_job_file
from scheduler.jobs import job_to_dict
from scheduler.jobtable import FIELDS, JobError
from scheduler.metrics import Metrics
from scheduler.planner import FirePlan, missed_fires

pytestmark = pytest.mark.unit

PROPERTY = settings(max_examples=150, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.function_scoped_fixture,
                                           HealthCheck.too_slow])
AGENTS, POOLS = {"db1", "db2"}, {"linux"}
TOKEN = "property-test-token-0123456789abcdef"
NOW = datetime(2026, 12, 1, 12, 0, 7, tzinfo=UTC)

# -- TOML from Python values ----------------------------------------------------------------


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{json.dumps(k)} = {toml_value(v)}" for k, v in value.items()) \
            + " }"
    raise TypeError(value)


def toml_tables(tables: dict[str, dict[str, Any]]) -> str:
    out = []
    for header, table in tables.items():
        out.append(f"[{header}]")
        out += [f"{json.dumps(k)} = {toml_value(v)}" for k, v in table.items()]
        out.append("")
    return "\n".join(out)


# -- strategies -----------------------------------------------------------------------------

scalars = st.one_of(
    st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=20),
    st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30)))
junk = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=8), inner, max_size=3)),
    max_leaves=6)
durations = st.one_of(
    st.sampled_from(["30s", "5m", "1h30m", "1d", "0", "0s", "99999999999d", "36500d",
                     "36501d", "1e308", "-5s", "1.5s", ""]),
    st.integers(min_value=-10, max_value=2**66), st.floats(allow_nan=True, allow_infinity=True),
    st.from_regex(r"\A[0-9]{1,14}(\.[0-9]{1,3})?[dhms]\Z"), junk)
FIELD_VALUES: dict[str, st.SearchStrategy[Any]] = {
    "command": st.one_of(st.just(["/bin/true"]), st.lists(st.text(max_size=10), max_size=3),
                         junk),
    "schedule": st.one_of(st.sampled_from(["*/5 * * * *", "0 0 31 2 *", "61 * * * *", "@daily",
                                           "@reboot", "0 0 * * 8", "*/0 * * * *", "L * * * *",
                                           "0 0 1 * * *"]), st.text(max_size=20), junk),
    "every": durations, "timeout": durations,
    "at": st.one_of(st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30)),
                    st.sampled_from(["2026-12-01T08:00", "9999-12-31T23:59", "0001-01-01T00:00",
                                     "yesterday"]), junk),
    "timezone": st.one_of(st.sampled_from(["UTC", "Europe/Berlin", "Mars/Olympus", "",
                                           "../../etc/passwd", "Etc/GMT+14"]), junk),
    "agent": st.one_of(st.sampled_from(["db1", "db9"]), junk),
    "pool": st.one_of(st.just("linux"), junk),
    "retries": st.one_of(st.fixed_dictionaries({}, optional={
        "count": st.one_of(st.integers(min_value=-5, max_value=2**64), junk),
        "delay": durations}), junk),
    "concurrency": st.one_of(st.sampled_from(["forbid", "allow", "replace"]), junk),
    "misfire": st.one_of(st.fixed_dictionaries({}, optional={
        "policy": st.one_of(st.sampled_from(["run-once", "run-all", "skip"]), junk),
        "grace": durations}), junk),
    "after": st.one_of(st.lists(st.sampled_from(["a", "b", "c"]), max_size=2), junk),
    "calendar": junk,
    "env": st.one_of(st.dictionaries(st.text(max_size=8), st.text(max_size=8), max_size=2),
                     junk),
    "secret_env": st.one_of(st.dictionaries(st.text(max_size=8), st.fixed_dictionaries(
        {"file": st.sampled_from(["/etc/pw", "pw"])}), max_size=2), junk),
    "cwd": st.one_of(st.sampled_from(["/srv", "srv", ""]), junk),
    "user": junk, "description": junk, "bogus": junk,
    "memory_max": st.one_of(st.sampled_from(["64MiB", "1KiB", "2000TiB", "lots", "0"]),
                            st.integers(min_value=-1, max_value=2**66), junk),
    "cpu_weight": st.one_of(st.integers(min_value=-1, max_value=20000), junk),
    "dst": st.one_of(st.fixed_dictionaries({}, optional={
        "gap": st.one_of(st.sampled_from(["after", "skip", "later"]), junk),
        "repeat": st.one_of(st.sampled_from(["first", "second", "both", "never"]), junk)}),
        junk),
    "business_day": st.one_of(st.integers(min_value=-30, max_value=30),
                              st.lists(st.integers(min_value=-30, max_value=30), max_size=3),
                              junk),
}
job_tables = st.fixed_dictionaries({}, optional=FIELD_VALUES)
job_names = st.one_of(st.sampled_from(["a", "b", "c"]), st.text(min_size=1, max_size=10))


def _job_file(jobs: dict[str, dict[str, Any]]) -> str:
    return toml_tables({f"job.{json.dumps(n)}": t for n, t in jobs.items()})


def check_one_line_errors(errors: list[Any], path: Path, kind: type) -> None:
    for e in errors:
        assert isinstance(e, kind)
        text = str(e)
        assert "\n" not in text and text.startswith(str(path)), text
        assert "Traceback" not in text


def exercise(jobs: list[Any]) -> None:
    """What the daemon does with good jobs: plan, catch up, list. None of it may raise."""
    for job in jobs:
        json.dumps(job_to_dict(job))
        fire = job.trigger.next_after(NOW)
        if fire is not None:
            job.trigger.next_after(fire)
        missed_fires(job, NOW - timedelta(hours=1), NOW)
    plan = FirePlan()
    plan.load(jobs, NOW)
    plan.next_time()


# -- job files ------------------------------------------------------------------------------

@PROPERTY
@given(jobs=st.dictionaries(job_names, job_tables, min_size=1, max_size=3))
@example(jobs={"\n": {}})  # found by this test: the complaint about that name took two lines
@example(jobs={"a": {"command": ["/bin/true"], "every": "99999999999d", "agent": "db1"}})
def test_any_job_file_is_a_clear_error_or_good_jobs(tmp_path, jobs):
    path = tmp_path / "jobs.toml"
    path.write_text(_job_file(jobs), encoding="utf-8")
    loaded, errors = load_job_file(path, agents=AGENTS, pools=POOLS)
    check_one_line_errors(errors, path, JobError)
    assert not (loaded and errors)
    exercise(loaded)
    result = CliRunner().invoke(cli, ["jobs", "validate", str(path)], prog_name="hasched")
    assert result.exit_code in (0, 1) and result.exception is None or \
        isinstance(result.exception, SystemExit), result.output
    assert "Traceback" not in result.output


@PROPERTY
@given(text=st.text(max_size=300))
def test_any_text_as_a_job_file_is_a_clear_error_or_good_jobs(tmp_path, text):
    path = tmp_path / "jobs.toml"
    path.write_text(text, encoding="utf-8")
    loaded, errors = load_job_file(path, agents=AGENTS, pools=POOLS)
    check_one_line_errors(errors, path, JobError)
    exercise(loaded)


def test_the_strategies_cover_every_field():
    assert set(FIELDS) <= set(FIELD_VALUES)


# -- configuration files ------------------------------------------------------------------

listens = st.one_of(st.sampled_from(["127.0.0.1:8480", "256.1.1.1:80", "[::1]:8480",
                                     "localhost:0", "host:65536", ":80", "1.2.3:80"]), junk)
scheduler_tables = st.fixed_dictionaries({}, optional={
    "listen": listens, "state_dir": junk, "run_dir": junk, "jobs_dir": junk,
    "api_tokens_file": junk, "log_level": st.one_of(st.just("debug"), junk),
    "dispatch_lead": durations, "calendars_file": junk, "tls": junk, "bogus": junk})
agent_ref = st.fixed_dictionaries({}, optional={
    "url": st.one_of(st.sampled_from(["http://127.0.0.1:1", "ftp://x", "http://"]), junk),
    "token_file": junk, "labels": junk, "ca": junk})
agent_tables = st.fixed_dictionaries({}, optional={
    "name": junk, "listen": listens, "state_dir": junk, "token_file": junk,
    "output_limit": st.one_of(st.sampled_from(["10MiB", "2PiB", "99999999TiB", "-1"]), junk),
    "kill_grace": durations, "retention": durations, "tls": junk})


@PROPERTY
@given(main=scheduler_tables, agents=st.dictionaries(st.sampled_from(["a1", "a.b", ""]),
                                                     agent_ref, max_size=2))
def test_any_scheduler_config_is_a_clear_error_or_good(tmp_path, main, agents):
    path = tmp_path / "scheduler.toml"
    tables = {"scheduler": main, **{f"agents.{json.dumps(n)}": a for n, a in agents.items()}}
    path.write_text(toml_tables(tables), encoding="utf-8")
    try:
        config = load_scheduler_config(path)
    except ConfigError as e:
        check_one_line_errors([e], path, ConfigError)
    else:
        assert math.isfinite(config.dispatch_lead) and 0 <= config.listen_port < 65536


@PROPERTY
@given(main=agent_tables)
def test_any_agent_config_is_a_clear_error_or_good(tmp_path, main):
    path = tmp_path / "agent.toml"
    path.write_text(toml_tables({"agent": main}), encoding="utf-8")
    try:
        config = load_agent_config(path)
    except ConfigError as e:
        check_one_line_errors([e], path, ConfigError)
    else:
        assert math.isfinite(config.kill_grace) and math.isfinite(config.retention)
        assert 0 <= config.output_limit <= 2**50


# -- a real Scheduler (standby, agents unreachable): reload, control, REST API ----------------

@pytest.fixture
def scheduler(tmp_path):
    sched = standby_scheduler(tmp_path, TOKEN)
    yield sched
    sched.ledger.close()


def state_of(sched: Scheduler) -> tuple[Any, ...]:
    ledger = sched.ledger
    return (ledger.epoch(), ledger.job_states(), ledger.list_runs(limit=10_000), sched.role,
            sorted(sched.jobs))


@PROPERTY
@given(jobs=st.dictionaries(job_names, job_tables, min_size=1, max_size=2))
def test_a_reload_is_all_good_or_changes_nothing(scheduler, jobs):
    path = Path(scheduler.config.jobs_dir) / "new.toml"
    path.write_text(_job_file(jobs), encoding="utf-8")
    in_force, before = scheduler.jobs, state_of(scheduler)
    answer = asyncio.run(scheduler.reload())
    try:
        if answer["errors"]:
            assert scheduler.jobs is in_force and state_of(scheduler) == before
            assert scheduler.jobset.definitions()["stale"]
        else:
            assert "good" in scheduler.jobs and not scheduler.jobset.definitions()["stale"]
        listing = json.loads("".join(scheduler.job_listing()))
        assert sorted(j["name"] for j in listing["jobs"]) == sorted(scheduler.jobs)
    finally:
        path.unlink()
        assert asyncio.run(scheduler.reload())["errors"] == []


control_requests = st.one_of(
    junk,
    st.fixed_dictionaries({"op": st.sampled_from(["status", "check", "demote", "reload",
                                                  "log-level", "fly", ""])},
                          optional={"level": junk}),
    # promote with every kind of wrong epoch (a right one is for the integration tests)
    st.fixed_dictionaries({"op": st.just("promote")}, optional={"epoch": st.one_of(
        st.integers(max_value=-1), st.integers(min_value=2**63, max_value=2**80),
        st.floats(), st.booleans(), st.text(max_size=5), st.none())}))


@PROPERTY
@given(req=control_requests)
@example(req={"op": "promote", "epoch": 2**64})  # found by this test: it broke the ledger
def test_any_control_request_is_answered_and_a_refusal_changes_nothing(scheduler, req):
    before = state_of(scheduler)
    answer = asyncio.run(handle_request(scheduler, req))
    assert isinstance(answer, dict) and isinstance(answer.get("ok"), bool)
    json.dumps(answer)
    if not answer["ok"]:
        assert isinstance(answer["error"], str) and "\n" not in answer["error"]
        assert state_of(scheduler) == before


segments = st.one_of(st.sampled_from(["good", "nope", "good@2026-12-01T00:00:00Z", "%2e%2e",
                                      "..", "a%00b", "%ff"]), st.text(max_size=12).map(
    lambda s: "".join(c if c.isalnum() else f"%{ord(c) & 0xff:02x}" for c in s)))
query_values = st.one_of(st.sampled_from(["", "0", "-1", "10001", "2**64", "running", "nope",
                                          "2026-12-01T00:00:00Z", "9999-99-99", "stderr"]),
                         st.text(max_size=10))
requests = st.tuples(
    st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH"]),
    st.sampled_from(["/health", "/metrics", "/v1", "/v1/jobs", "/v1/jobs/{}", "/v1/jobs/{}/run",
                     "/v1/jobs/{}/pause", "/v1/jobs/{}/resume", "/v1/runs", "/v1/runs/{}",
                     "/v1/runs/{}/output", "/v1/{}", "/{}"]),
    segments,
    st.dictionaries(st.sampled_from(["job", "state", "since", "until", "limit", "stream", "x"]),
                    query_values, max_size=3),
    st.binary(max_size=200),
    st.booleans())


@PROPERTY
@given(reqs=st.lists(requests, min_size=1, max_size=4))
def test_any_api_request_is_json_never_a_500_and_a_refusal_changes_nothing(scheduler, reqs):
    async def go() -> None:
        app = make_app(scheduler, scheduler.api_tokens, Metrics())
        async with TestClient(TestServer(app)) as client:
            for method, template, segment, query, body, authed in reqs:
                path = template.replace("{}", segment)
                headers = {"Authorization": f"Bearer {TOKEN}"} if authed else {}
                before = state_of(scheduler)
                resp = await client.request(method, path, params=query, data=body,
                                            headers=headers)
                text = await resp.text()
                assert resp.status < 500, (method, path, query, resp.status, text)
                if resp.status >= 400:
                    assert "error" in json.loads(text), text
                    assert state_of(scheduler) == before
                elif path.startswith("/v1/"):
                    json.loads(text)

    asyncio.run(go())
