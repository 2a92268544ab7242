"""Token roles (the tokens file, the API's checks), the cancel and audit routes, the ledger's
audit op and the run mover's cancel."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from test_api import RUN_ID, FakeService, expect, with_client
from test_progress import NOW, Bench, job

from scheduler import audit
from scheduler.audit import Actor
from scheduler.auth import ADMIN, Principal, Tokens, fingerprint, read_api_tokens
from scheduler.config import ConfigError
from scheduler.ledger import Change, Ledger
from scheduler.runs import Run

pytestmark = pytest.mark.unit

VIEWER_T, OPERATOR_T, ADMIN_T = "v" * 40, "o" * 40, "a" * 40
TOKENS = Tokens([(VIEWER_T, Principal("vera", "viewer")), (OPERATOR_T, Principal("otto",
                 "operator")), (ADMIN_T, Principal("ada", "admin"))])


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def tokens_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "api-tokens"
    path.write_text(text)
    path.chmod(0o600)
    return path


# -- the tokens file -------------------------------------------------------------------------

def test_a_tokens_file_names_each_token_and_its_role_and_bare_tokens_stay_admins(tmp_path):
    path = tokens_file(tmp_path, f"# who may do what\nvera viewer {VIEWER_T}\n\n"
                                 f"otto   operator\t{OPERATOR_T}\n{ADMIN_T}\n")
    tokens = read_api_tokens(path)
    assert len(tokens) == 3
    assert tokens.find(VIEWER_T) == Principal("vera", "viewer")
    assert tokens.find(OPERATOR_T) == Principal("otto", "operator")
    assert tokens.find(ADMIN_T) == Principal(fingerprint(ADMIN_T), ADMIN)
    assert ADMIN_T not in fingerprint(ADMIN_T) and tokens.find("x" * 40) is None


@pytest.mark.parametrize("line,where,what", [
    ("vera viewer", ":1: token:", "expected NAME ROLE TOKEN or a bare TOKEN, got 2 fields"),
    (f"vera root {VIEWER_T}", ":1: role:", "'root': must be one of viewer, operator, admin"),
    (f"-vera viewer {VIEWER_T}", ":1: name:", "'-vera'"),
    ("vera viewer short", ":1: token:", "shorter than 32"),
    (f"vera viewer {VIEWER_T}\nvera admin {ADMIN_T}", ":2: name:", "already the name"),
    (f"vera viewer {VIEWER_T}\notto admin {VIEWER_T}", ":2: token:", "the same token as on"),
])
def test_a_bad_tokens_line_is_refused_naming_file_line_and_field(tmp_path, line, where, what):
    path = tokens_file(tmp_path, line + "\n")
    with pytest.raises(ConfigError) as err:
        read_api_tokens(path)
    text = str(err.value)
    assert f"{path}{where}" in text and what in text and "\n" not in text
    assert VIEWER_T not in text and ADMIN_T not in text  # a token is never shown


# -- roles at the API --------------------------------------------------------------------------

@pytest.mark.parametrize("method,path", [
    ("POST", "/v1/jobs/nightly/pause"), ("POST", "/v1/jobs/nightly/resume"),
    ("POST", "/v1/jobs/nightly/run"), ("POST", f"/v1/runs/{RUN_ID}/cancel"),
])
def test_a_viewer_reads_and_is_refused_every_order_with_403_and_nothing_done(method, path):
    async def scenario(client, service, metrics):
        for read in ("/v1/jobs", "/v1/jobs/nightly", "/v1/runs", "/v1/audit"):
            await expect(client, "GET", read, 200, headers=bearer(VIEWER_T))
        body = await expect(client, method, path, 403, headers=bearer(VIEWER_T))
        assert body == {"error": f"token 'vera' is a viewer: {method} {path} needs operator"}
        assert service.orders == [] and service.jobs["nightly"]["paused"] is False

    with_client(scenario, tokens=TOKENS)


def test_an_operator_and_an_admin_give_orders_and_the_service_learns_who():
    async def scenario(client, service, metrics):
        await expect(client, "POST", "/v1/jobs/nightly/pause", 200, headers=bearer(OPERATOR_T))
        await expect(client, "POST", "/v1/jobs/nightly/resume", 200, headers=bearer(ADMIN_T))
        (_, _, otto), (_, _, ada) = service.orders
        assert (otto.name, otto.role, otto.source) == ("otto", "operator", "127.0.0.1")
        assert (ada.name, ada.role) == ("ada", "admin")

    with_client(scenario, tokens=TOKENS)


def test_a_write_the_api_does_not_name_as_an_operators_needs_an_admin():
    from aiohttp import web

    from scheduler import api

    async def reload(request):
        return web.json_response({"reloaded": True})

    async def scenario(client, service, metrics):
        await expect(client, "POST", "/v1/reload", 403, headers=bearer(OPERATOR_T))
        await expect(client, "POST", "/v1/reload", 200, headers=bearer(ADMIN_T))

    original = api._POSTS.copy()
    api._POSTS["/v1/reload"] = reload
    try:
        with_client(scenario, tokens=TOKENS)
    finally:
        api._POSTS.clear()
        api._POSTS.update(original)


# -- cancel and audit routes -------------------------------------------------------------------

def test_cancel_answers_200_when_done_202_when_asked_of_the_agent_409_when_ended():
    service = FakeService()
    service.runs["s@1"] = {"run_id": "s@1", "job": "nightly", "state": "scheduled"}
    service.runs["r@1"] = {"run_id": "r@1", "job": "nightly", "state": "running"}

    async def scenario(client, service, metrics):
        done = await expect(client, "POST", "/v1/runs/s@1/cancel", 200)
        assert done["outcome"] == "cancelled" and done["run"]["state"] == "cancelled"
        asked = await expect(client, "POST", "/v1/runs/r@1/cancel", 202)
        assert asked["outcome"] == "requested"
        ended = await expect(client, "POST", f"/v1/runs/{RUN_ID}/cancel", 409)
        assert "already ended (succeeded)" in ended["error"]
        await expect(client, "POST", "/v1/runs/nope@1/cancel", 404)

    with_client(scenario, service)
    assert [(what, on) for what, on, _ in service.orders] == [("cancel", "s@1"),
                                                               ("cancel", "r@1")]


def test_audit_route_passes_its_filters_and_refuses_a_bad_one():
    async def scenario(client, service, metrics):
        body = await expect(client, "GET", "/v1/audit?job=nightly&since=2026-12-01T02:00:00%2B01:00"
                            "&limit=5", 200)
        assert body["entries"][0]["actor"] == "alice"
        bad = await expect(client, "GET", "/v1/audit?since=yesterday", 400)
        assert "'since'" in bad["error"]

    service = with_client(scenario)
    assert service.audit_calls == [{"job": "nightly", "since": "2026-12-01T01:00:00Z",
                                    "limit": 5}]


# -- the ledger's audit op ---------------------------------------------------------------------

def test_an_audit_entry_is_one_self_contained_row_applied_once_on_every_copy(tmp_path):
    entry = audit.entry(Actor("otto", "operator", "10.0.0.9"), "pause", "nightly",
                        detail="already paused")
    one, two = Ledger(tmp_path / "1" / "l.sqlite"), Ledger(tmp_path / "2" / "l.sqlite")
    assert one.apply([entry, entry]) == [True, False]  # the id makes it idempotent
    assert two.apply([entry]) == [True]
    assert one.audit() == two.audit()
    (row,) = one.audit(job="nightly")
    assert {k: row[k] for k in ("actor", "role", "source", "action", "job", "run_id",
                                "detail")} == {
        "actor": "otto", "role": "operator", "source": "10.0.0.9", "action": "pause",
        "job": "nightly", "run_id": None, "detail": "already paused"}
    assert one.audit(job="other") == [] and one.audit(since="2999-01-01T00:00:00Z") == []
    with pytest.raises(ValueError, match="unknown audit action"):
        audit.entry(Actor("x", "admin"), "explode", "nightly")


# -- the run mover's cancel --------------------------------------------------------------------

def _cancel(bench: Bench, run: Run, during=None) -> tuple[Any, Any, list[str]]:
    recorded: list[str] = []

    def also(r: Run) -> list[Any]:
        recorded.append(r.state)
        return [audit.entry(Actor("otto", "operator"), "cancel", r.job, r.run_id)]

    async def go():
        mover = bench.mover()
        if during is not None:
            await during(mover)
        out = await mover.cancel(run.key, "cancelled by otto", also)
        await mover.advance(bench.ledger.get_attempt(*run.key))  # never dispatched afterwards
        return out

    before, why = asyncio.run(go())
    return before, why, recorded


def test_a_scheduled_run_is_cancelled_in_the_ledger_with_its_audit_entry_and_never_sent(
        tmp_path):
    b = Bench(tmp_path, job())
    run = b.add("j", NOW)
    before, why, recorded = _cancel(b, run)
    after = b.ledger.get_attempt(*run.key)
    assert (before.state, why, recorded) == ("scheduled", None, ["scheduled"])
    assert (after.state, after.reason) == ("cancelled", "cancelled by otto")
    assert b.dispatcher.sent == [] and b.dispatcher.cancelled == []
    assert [e["action"] for e in b.ledger.audit()] == ["cancel"]


def test_a_running_run_is_cancelled_at_its_agent_and_audited_once_asked(tmp_path):
    b = Bench(tmp_path, job())
    run = b.add("j", NOW, state="running", agent="a")
    before, why, recorded = _cancel(b, run)
    assert (before.state, why) == ("running", None)
    assert b.dispatcher.cancelled == [run.run_id]
    assert b.ledger.get_attempt(*run.key).state == "running"  # ends when collected
    assert [e["run_id"] for e in b.ledger.audit()] == [run.run_id]


def test_a_cancel_the_agent_did_not_take_is_said_and_not_audited(tmp_path):
    b = Bench(tmp_path, job())
    run = b.add("j", NOW, state="running", agent="a")

    async def refuse(r: Run) -> str:
        return "agent a: unreachable"

    b.dispatcher.cancel = refuse  # type: ignore[method-assign]
    _, why, recorded = _cancel(b, run)
    assert why == "agent a: unreachable" and recorded == [] and b.ledger.audit() == []


def test_a_cancel_waits_for_an_advance_in_progress_then_cancels_what_it_sent(tmp_path):
    b = Bench(tmp_path, job())
    run = b.add("j", NOW)
    sent = asyncio.Event()

    async def slow_dispatch(r: Run, j: Any) -> bool:
        await asyncio.sleep(0.1)  # the order is on its way when the cancel comes
        b.ledger.apply([Change("update", *r.key, fields={"state": "running",
                                                                 "agent": "a"})])
        sent.set()
        return True

    b.dispatcher.dispatch = slow_dispatch  # type: ignore[method-assign]

    async def during(mover):
        asyncio.get_running_loop().create_task(mover.advance(run))
        await asyncio.sleep(0.01)

    before, why, _ = _cancel(b, run, during)
    assert sent.is_set() and before.state == "running" and why is None
    assert b.dispatcher.cancelled == [run.run_id]


# -- the orders (a real ledger) ------------------------------------------------------------

class _Pool:
    def pick(self, job: Any) -> str:
        return "a"


def _orders(bench: Bench, active: bool = True):
    from scheduler.ledger import BatchWriter
    from scheduler.orders import Orders
    from scheduler.service import NotActive

    def refuse() -> None:
        if not active:
            raise NotActive("this scheduler is standby")

    return Orders(bench.ledger, BatchWriter(bench.ledger), lambda: bench.jobs, _Pool(),
                  bench.mover(), bench.spawned.append, refuse)


def test_a_pause_and_its_audit_entry_are_written_together_and_a_repeat_says_so(tmp_path):
    b = Bench(tmp_path, job())
    otto = Actor("otto", "operator", "10.0.0.9")

    async def go():
        orders = _orders(b)
        await orders.set_paused("j", True, otto)
        await orders.set_paused("j", True, otto)
        await orders.set_paused("j", False, otto)

    asyncio.run(go())
    assert b.ledger.paused_jobs() == set()
    entries = list(reversed(b.ledger.audit()))
    assert [(e["action"], e["detail"], e["actor"]) for e in entries] == [
        ("pause", None, "otto"), ("pause", "already paused", "otto"), ("resume", None, "otto")]


def test_orders_refused_change_nothing_and_leave_no_audit_entry(tmp_path):
    from scheduler.service import Conflict, NotActive, NotFound

    b = Bench(tmp_path, job())
    ended = b.add("j", NOW, state="succeeded")
    otto = Actor("otto", "operator")

    async def go():
        with pytest.raises(Conflict, match="already ended"):
            await _orders(b).cancel(ended.run_id, otto)
        with pytest.raises(NotFound):
            await _orders(b).cancel("j@2000-01-01T00:00:00Z", otto)
        with pytest.raises(NotFound):
            await _orders(b).set_paused("nope", True, otto)
        with pytest.raises(NotActive):
            await _orders(b, active=False).run_now("j", otto)

    asyncio.run(go())
    assert b.ledger.audit() == [] and b.ledger.paused_jobs() == set()
    assert [r.run_id for r in b.ledger.list_runs()] == [ended.run_id]


def test_a_manual_run_is_audited_with_its_run_id(tmp_path):
    b = Bench(tmp_path, job())

    async def go():
        return await _orders(b).run_now("j", Actor("otto", "operator"))

    run = asyncio.run(go())
    assert len(b.spawned) == 1  # the run is moved on at once
    b.spawned.pop().close()
    (entry,) = b.ledger.audit()
    assert (entry["action"], entry["job"], entry["run_id"]) == ("run", "j", run.run_id)
