"""The REST API's own logic (routing, auth, errors, parameters) against a small fake Service."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import ssl
import subprocess
from datetime import datetime
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from scheduler import preview
from scheduler.api import make_app, make_ssl_context
from scheduler.jobs import Job
from scheduler.metrics import Metrics
from scheduler.service import Conflict, NotActive, NotFound
from scheduler.triggers import make_trigger

pytestmark = pytest.mark.unit

TOKEN = "s3cret-token-for-tests"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
RUN_ID = "nightly@2026-12-01T01:30:00Z"


class FakeService:
    def __init__(self) -> None:
        self.role = "active"
        self.busy = False
        self.jobs = {"nightly": {"name": "nightly", "paused": False, "next_fire": "x"}}
        self.runs = {RUN_ID: {"run_id": RUN_ID, "job": "nightly", "state": "succeeded"}}
        self.list_runs_calls: list[dict[str, Any]] = []
        self.output_calls: list[tuple[str, str]] = []
        # The preview answers come from the real preview code over a real job definition.
        self.preview_jobs = {"nightly": Job("nightly", ("/bin/true",), make_trigger(
            schedule="30 2 * * *", timezone="Europe/Berlin"), "Europe/Berlin", agent="db1")}
        self.preview_calls: list[tuple] = []
        self.stale: dict[str, Any] | None = None
        self.orders: list[tuple[str, str, Any]] = []  # (what, on what, by whom)
        self.audit_calls: list[dict[str, Any]] = []

    def health(self) -> dict[str, Any]:
        return {"role": self.role, "epoch": 7, "version": "0.1.0", "state_store": "ok", "jobs": 1}

    def status(self) -> dict[str, Any]:
        return {"role": self.role, "epoch": 7, "agents": 3, "agents_reachable": 2}

    def list_jobs(self) -> list[dict[str, Any]]:
        return list(self.jobs.values())

    def definitions(self) -> dict[str, Any]:
        return self.stale or {"stale": False}

    def job_listing(self):
        text = json.dumps({"jobs": self.list_jobs(), "definitions": self.definitions()})
        yield from (text[:10], text[10:])

    def get_job(self, name: str) -> dict[str, Any]:
        if name not in self.jobs:
            raise NotFound(f"no job named {name!r}")
        return self.jobs[name]

    async def run_now(self, name: str, by=None) -> dict[str, Any]:
        self.get_job(name)
        if self.role != "active":
            raise NotActive()
        if self.busy:
            raise Conflict(f"job {name!r} has an unfinished run (concurrency=forbid)")
        self.orders.append(("run", name, by))
        return {"run_id": f"{name}@2026-12-01T02:00:00Z", "state": "pending"}

    async def pause(self, name: str, by=None) -> dict[str, Any]:
        self.get_job(name)["paused"] = True
        self.orders.append(("pause", name, by))
        return self.jobs[name]

    async def resume(self, name: str, by=None) -> dict[str, Any]:
        self.get_job(name)["paused"] = False
        self.orders.append(("resume", name, by))
        return self.jobs[name]

    async def cancel(self, run_id: str, by=None) -> dict[str, Any]:
        run = self.get_run(run_id)
        if run["state"] not in ("scheduled", "dispatched", "running"):
            raise Conflict(f"run {run_id} attempt 1 already ended ({run['state']}): nothing "
                           "to cancel")
        self.orders.append(("cancel", run_id, by))
        outcome = "cancelled" if run["state"] == "scheduled" else "requested"
        run["state"] = "cancelled" if outcome == "cancelled" else run["state"]
        return {"run": run, "outcome": outcome}

    def audit(self, job=None, since=None, limit=100) -> list[dict[str, Any]]:
        self.audit_calls.append({"job": job, "since": since, "limit": limit})
        return [{"id": "1", "at": "2026-12-01T01:00:00.000000Z", "actor": "alice",
                 "role": "operator", "source": "127.0.0.1", "action": "pause",
                 "job": "nightly", "run_id": None, "detail": None}]

    def next_fires(self, name: str, count: int, start: datetime) -> dict[str, Any]:
        self.get_job(name)
        self.preview_calls.append(("next", name, count, start))
        return preview.next_view(self.preview_jobs[name], start, count)

    async def forecast(self, start: datetime, end: datetime, limit: int) -> dict[str, Any]:
        self.preview_calls.append(("forecast", start, end, limit))
        return preview.forecast_view(self.preview_jobs, start, end, limit)

    def list_runs(self, job=None, state=None, since=None, until=None, limit=100):
        self.list_runs_calls.append(
            {"job": job, "state": state, "since": since, "until": until, "limit": limit}
        )
        return list(self.runs.values())

    def get_run(self, run_id: str) -> dict[str, Any]:
        if run_id not in self.runs:
            raise NotFound(f"no run {run_id!r}")
        return self.runs[run_id]

    async def run_output(self, run_id: str, stream: str = "stdout") -> str:
        self.get_run(run_id)
        self.output_calls.append((run_id, stream))
        return f"{stream} of {run_id}\n"


def with_client(scenario, service: FakeService | None = None, metrics: Metrics | None = None,
                tokens: Any = None):
    """Run `scenario(client, service, metrics)` against a real aiohttp server on loopback."""
    service = service or FakeService()
    metrics = metrics or Metrics()

    async def main():
        app = make_app(service, tokens or frozenset({"another-token", TOKEN}), metrics)
        async with TestClient(TestServer(app, host="127.0.0.1")) as client:
            await scenario(client, service, metrics)

    asyncio.run(main())
    return service


async def expect(client, method, path, status, headers=AUTH, **kw):
    resp = await client.request(method, path, headers=headers, **kw)
    assert resp.status == status, f"{method} {path}: {resp.status} {await resp.text()}"
    if resp.content_type == "application/json":
        return await resp.json()
    return await resp.text()


def test_health_needs_no_token_and_reports_service_health():
    async def scenario(client, service, metrics):
        body = await expect(client, "GET", "/health", 200, headers={})
        assert body == service.health()

    with_client(scenario)


def test_metrics_needs_no_token_and_shows_role_epoch_agents():
    async def scenario(client, service, metrics):
        metrics.count_run("timed-out")
        resp = await client.get("/metrics")
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/plain")
        text = await resp.text()
        assert 'hasched_role{role="active"} 1.0' in text
        assert 'hasched_role{role="standby"} 0.0' in text
        assert "hasched_epoch 7.0" in text
        assert "hasched_agents_reachable 2.0" in text
        assert "hasched_agents_total 3.0" in text
        assert 'hasched_runs_total{outcome="timed-out"} 1.0' in text

    with_client(scenario)


def test_metrics_shows_how_far_behind_the_service_says_it_is():
    class Behind(FakeService):
        def health(self) -> dict[str, Any]:
            return super().health() | {"behind_seconds": 12.5, "overloaded": True}

    async def scenario(client, service, metrics):
        text = await (await client.get("/metrics")).text()
        assert "hasched_behind_seconds 12.5" in text

    with_client(scenario, Behind())


@pytest.mark.parametrize("headers", [
    {},
    {"Authorization": "Bearer wrong"},
    {"Authorization": f"Basic {TOKEN}"},
    {"Authorization": "Bearer "},
    {"Authorization": f"Bearer {TOKEN}x"},
])
@pytest.mark.parametrize("method,path", [
    ("GET", "/v1/jobs"), ("GET", "/v1/jobs/nightly"), ("POST", "/v1/jobs/nightly/run"),
    ("POST", "/v1/jobs/nightly/pause"), ("POST", "/v1/jobs/nightly/resume"),
    ("GET", "/v1/runs"), ("GET", f"/v1/runs/{RUN_ID}"), ("GET", f"/v1/runs/{RUN_ID}/output"),
    ("GET", "/v1/nothing-here"), ("GET", "/v1/jobs/nightly/next"), ("GET", "/v1/forecast"),
])
def test_every_v1_route_refuses_a_missing_or_wrong_token(headers, method, path):
    async def scenario(client, service, metrics):
        body = await expect(client, method, path, 401, headers=headers)
        assert body == {"error": "missing or wrong bearer token"}
        assert service.jobs["nightly"]["paused"] is False  # nothing changed

    with_client(scenario)


def test_any_configured_token_is_accepted():
    async def scenario(client, service, metrics):
        await expect(client, "GET", "/v1/jobs", 200,
                     headers={"Authorization": "Bearer another-token"})

    with_client(scenario)


def test_tokens_are_never_logged(caplog):
    caplog.set_level(logging.DEBUG)

    async def scenario(client, service, metrics):
        await expect(client, "GET", "/v1/jobs", 401,
                     headers={"Authorization": "Bearer leaked-guess"})
        await expect(client, "GET", "/v1/jobs", 200)

    with_client(scenario)
    assert "refused GET /v1/jobs" in caplog.text
    assert "leaked-guess" not in caplog.text and TOKEN not in caplog.text


def test_jobs_list_show_pause_resume():
    async def scenario(client, service, metrics):
        assert await expect(client, "GET", "/v1/jobs", 200) == {"jobs": service.list_jobs(),
                                                             "definitions": {"stale": False}}
        assert (await expect(client, "GET", "/v1/jobs/nightly", 200))["name"] == "nightly"
        assert (await expect(client, "POST", "/v1/jobs/nightly/pause", 200))["paused"] is True
        assert service.jobs["nightly"]["paused"] is True
        assert (await expect(client, "POST", "/v1/jobs/nightly/resume", 200))["paused"] is False
        assert service.jobs["nightly"]["paused"] is False

    with_client(scenario)


def test_run_now_answers_202_with_the_run_row():
    async def scenario(client, service, metrics):
        body = await expect(client, "POST", "/v1/jobs/nightly/run", 202)
        assert body == {"run": {"run_id": "nightly@2026-12-01T02:00:00Z", "state": "pending"}}

    with_client(scenario)


def test_run_now_on_a_standby_is_409():
    service = FakeService()
    service.role = "standby"

    async def scenario(client, service, metrics):
        body = await expect(client, "POST", "/v1/jobs/nightly/run", 409)
        assert body == {"error": "this scheduler is standby"}

    with_client(scenario, service)


def test_401s_are_debug_lines_and_one_warning_a_minute(caplog):
    caplog.set_level(logging.DEBUG, logger="hasched.api")

    async def scenario(client, service, metrics):
        for _ in range(50):
            await expect(client, "GET", "/v1/jobs", 401, headers={})

    with_client(scenario)
    refusals = [r for r in caplog.records if "missing or wrong bearer token" in r.getMessage()]
    warnings = [r for r in refusals if r.levelno >= logging.WARNING]
    assert len(refusals) == 51 and len(warnings) == 1  # it was 50 WARNING lines
    assert sum(r.levelno == logging.DEBUG for r in refusals) == 50


def test_each_request_is_a_debug_line(caplog):
    caplog.set_level(logging.DEBUG, logger="hasched.api")

    async def scenario(client, service, metrics):
        await expect(client, "GET", "/v1/jobs/nope", 404, headers=AUTH)

    with_client(scenario)
    assert any(r.levelno == logging.DEBUG and "GET /v1/jobs/nope from" in r.getMessage()
               and ": 404 in " in r.getMessage() for r in caplog.records)


def test_run_now_refused_by_the_job_policy_is_409_with_the_reason():
    service = FakeService()
    service.busy = True

    async def scenario(client, service, metrics):
        body = await expect(client, "POST", "/v1/jobs/nightly/run", 409)
        assert body == {"error": "job 'nightly' has an unfinished run (concurrency=forbid)"}

    with_client(scenario, service)


@pytest.mark.parametrize("method,path", [
    ("GET", "/v1/jobs/nope"), ("POST", "/v1/jobs/nope/run"), ("POST", "/v1/jobs/nope/pause"),
    ("POST", "/v1/jobs/nope/resume"), ("GET", "/v1/runs/nope@2026-12-01T01:30:00Z"),
    ("GET", "/v1/jobs/nope/next"),
    ("GET", "/v1/runs/nope@2026-12-01T01:30:00Z/output"),
])
def test_unknown_job_or_run_is_404_with_one_line(method, path):
    async def scenario(client, service, metrics):
        body = await expect(client, method, path, 404)
        assert "nope" in body["error"] and "\n" not in body["error"]

    with_client(scenario)


@pytest.mark.parametrize("path", ["/nothing", "/v1/jobs/nightly/explode", "/v1"])
def test_unknown_route_is_404_json(path):
    async def scenario(client, service, metrics):
        body = await expect(client, "GET", path, 404)
        assert set(body) == {"error"} and "not found" in body["error"]

    with_client(scenario)


def test_wrong_method_is_405_json():
    async def scenario(client, service, metrics):
        body = await expect(client, "DELETE", "/v1/jobs/nightly", 405)
        assert "method not allowed" in body["error"]

    with_client(scenario)


def test_runs_list_passes_filters_normalised_to_utc():
    async def scenario(client, service, metrics):
        params = {"job": "nightly", "state": "failed", "since": "2026-12-01T02:30:00+01:00",
                  "until": "2026-12-02T00:00:00", "limit": "5"}
        body = await expect(client, "GET", "/v1/runs", 200, params=params)
        assert body == {"runs": list(service.runs.values())}
        assert service.list_runs_calls[-1] == {
            "job": "nightly", "state": "failed", "since": "2026-12-01T01:30:00Z",
            "until": "2026-12-02T00:00:00Z", "limit": 5,
        }
        await expect(client, "GET", "/v1/runs", 200)
        assert service.list_runs_calls[-1] == {
            "job": None, "state": None, "since": None, "until": None, "limit": 100,
        }

    with_client(scenario)


@pytest.mark.parametrize("params,names", [
    ({"limit": "ten"}, "'limit'"),
    ({"limit": "0"}, "'limit'"),
    ({"state": "exploded"}, "'state'"),
    ({"since": "yesterday"}, "'since'"),
    ({"until": "2026-13-01"}, "'until'"),
])
def test_bad_runs_query_is_400_naming_the_parameter(params, names):
    async def scenario(client, service, metrics):
        body = await expect(client, "GET", "/v1/runs", 400, params=params)
        assert names in body["error"] and "\n" not in body["error"]
        assert service.list_runs_calls == []

    with_client(scenario)


def test_run_show_and_output_with_percent_encoded_id():
    encoded = RUN_ID.replace("@", "%40").replace(":", "%3A")

    async def scenario(client, service, metrics):
        assert await expect(client, "GET", f"/v1/runs/{encoded}", 200) == service.runs[RUN_ID]
        text = await expect(client, "GET", f"/v1/runs/{encoded}/output", 200)
        assert text == f"stdout of {RUN_ID}\n"
        text = await expect(client, "GET", f"/v1/runs/{encoded}/output", 200,
                            params={"stream": "stderr"})
        assert text == f"stderr of {RUN_ID}\n"
        body = await expect(client, "GET", f"/v1/runs/{encoded}/output", 400,
                            params={"stream": "both"})
        assert "'stream'" in body["error"]
        assert service.output_calls == [(RUN_ID, "stdout"), (RUN_ID, "stderr")]

    with_client(scenario)


def test_a_service_crash_is_500_json_without_traceback_in_the_answer(caplog):
    service = FakeService()

    def broken():
        raise RuntimeError("ledger\nexploded")

    service.job_listing = broken

    async def scenario(client, service, metrics):
        body = await expect(client, "GET", "/v1/jobs", 500)
        assert body == {"error": "internal error; see the scheduler's log"}

    with_client(scenario, service)
    assert "Traceback" in caplog.text  # the operator gets it in the log


def test_no_ssl_context_without_tls():
    assert make_ssl_context(None) is None
    assert make_ssl_context({}) is None


def test_ssl_context_requires_cert_and_key():
    with pytest.raises(ValueError, match="'cert' and 'key'"):
        make_ssl_context({"cert": "/x.pem"})


def test_ssl_context_loads_a_real_certificate(tmp_path):
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )
    ctx = make_ssl_context({"cert": str(cert), "key": str(key), "ca": str(cert)})
    assert isinstance(ctx, ssl.SSLContext)
    assert ctx.verify_mode == ssl.CERT_NONE  # clients authenticate with tokens, not certificates


def test_next_fires_in_the_jobs_zone_and_utc_with_dst_notes():
    async def scenario(client, service, metrics):
        body = await expect(client, "GET", "/v1/jobs/nightly/next", 200,
                            params={"count": "3", "from": "2027-03-27T00:00:00Z"})
        assert body["job"] == "nightly" and body["timezone"] == "Europe/Berlin"
        assert body["from"] == "2027-03-27T00:00:00Z"
        assert body["fires"] == [
            {"utc": "2027-03-27T01:30:00Z", "local": "2027-03-27T02:30:00+01:00",
             "zone": "CET", "notes": []},
            {"utc": "2027-03-28T01:00:00Z", "local": "2027-03-28T03:00:00+02:00",
             "zone": "CEST", "notes": ["02:30 does not exist on 2027-03-28 -> runs 03:00"]},
            {"utc": "2027-03-29T00:30:00Z", "local": "2027-03-29T02:30:00+02:00",
             "zone": "CEST", "notes": []}]
        # a time without offset is UTC; the default count is 10
        await expect(client, "GET", "/v1/jobs/nightly/next", 200,
                     params={"from": "2027-03-27T00:00"})
        assert service.preview_calls[-1][2:] == (10, datetime.fromisoformat(
            "2027-03-27T00:00:00+00:00"))

    with_client(scenario)


@pytest.mark.parametrize("path, params, message", [
    ("/v1/jobs/nightly/next", {"count": "0"},
     "query parameter 'count': must be between 1 and 1000, got 0"),
    ("/v1/jobs/nightly/next", {"count": "1001"},
     "query parameter 'count': must be between 1 and 1000, got 1001"),
    ("/v1/jobs/nightly/next", {"count": "many"}, "query parameter 'count': not an integer: 'many'"),
    ("/v1/jobs/nightly/next", {"from": "soon"},
     "query parameter 'from': not an ISO-8601 time: 'soon' (e.g. 2026-12-01T01:30:00Z)"),
    ("/v1/forecast", {}, "query parameter 'to' is required (an ISO-8601 time)"),
    ("/v1/forecast", {"from": "2027-01-02", "to": "2027-01-01"},
     "query parameter 'to': must be after 'from'"),
    ("/v1/forecast", {"to": "2030-01-01", "limit": "0"},
     "query parameter 'limit': must be between 1 and 10000, got 0"),
])
def test_bad_preview_query_is_400_json(path, params, message):
    async def scenario(client, service, metrics):
        body = await expect(client, "GET", path, 400, params=params)
        assert body == {"error": message}
        assert service.preview_calls == []

    with_client(scenario)


def test_forecast_lists_every_fire_in_the_window():
    async def scenario(client, service, metrics):
        body = await expect(client, "GET", "/v1/forecast", 200, params={
            "from": "2027-10-30T00:00:00Z", "to": "2027-11-01T00:00:00Z"})
        assert body["truncated"] is False
        assert [(f["job"], f["utc"], f["notes"]) for f in body["fires"]] == [
            ("nightly", "2027-10-30T00:30:00Z", []),
            ("nightly", "2027-10-31T00:30:00Z",
             ["02:30 happens twice on 2027-10-31 (CEST, then CET) -> runs at the first only"])]
        body = await expect(client, "GET", "/v1/forecast", 200, params={
            "from": "2027-10-30T00:00:00Z", "to": "2027-11-01T00:00:00Z", "limit": "1"})
        assert body["truncated"] is True and len(body["fires"]) == 1

    with_client(scenario)


@pytest.mark.parametrize("raw", [
    b"GARBAGE\r\n\r\n",
    b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 9000 + b"\r\n\r\n",
    b"GET /health HTTP/1.1\r\nContent-Length: zz\r\n\r\n",
])
def test_bad_http_is_a_400_and_one_debug_line_not_a_traceback(caplog, raw):
    from scheduler.api import http_logger

    caplog.set_level(logging.DEBUG, logger="hasched")  # restored after the test

    async def scenario():
        server = TestServer(make_app(FakeService(), frozenset({TOKEN}), Metrics()))
        await server.start_server(logger=http_logger())
        try:
            reader, writer = await asyncio.open_connection(server.host, server.port)
            writer.write(raw)
            await writer.drain()
            answer = await reader.read(1000)
            writer.close()
        finally:
            await server.close()
        return answer

    assert asyncio.run(scenario()).startswith(b"HTTP/1.0 400 ")
    records = [r for r in caplog.records if r.name == "hasched.api.http"]
    assert len(records) == 1 and records[0].levelno == logging.DEBUG  # it was ERROR + traceback
    assert records[0].exc_info is None and "\n" not in records[0].getMessage()


def test_a_client_leaving_mid_listing_is_no_internal_error(caplog):
    class Big(FakeService):
        def job_listing(self):
            yield '{"jobs": ['
            for i in range(20000):
                yield ("," if i else "") + ",".join('{"name": "x"}' for _ in range(100))
            yield '], "definitions": {}}'

    caplog.set_level(logging.DEBUG, logger="hasched")

    async def scenario():
        # The daemon's own runner (TestServer cancels a handler whose client left instead)
        runner = web.AppRunner(make_app(Big(), frozenset({TOKEN}), Metrics()), access_log=None)
        await runner.setup()
        sock = socket.create_server(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        await web.SockSite(runner, sock).start()
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(f"GET /v1/jobs HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}"
                         "\r\n\r\n".encode())
            await writer.drain()
            assert (await reader.read(100)).startswith(b"HTTP/1.1 200 ")
            writer.close()
            for _ in range(100):  # until the server has noticed
                if any("left before the end" in r.getMessage() for r in caplog.records):
                    break
                await asyncio.sleep(0.05)
        finally:
            await runner.cleanup()

    asyncio.run(scenario())
    assert any("left before the end" in r.getMessage() for r in caplog.records), \
        [r.getMessage() for r in caplog.records]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
