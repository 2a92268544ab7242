"""`hasched status`: is the scheduler up, which role and epoch, and a few counts."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import click

from scheduler.cli.client import Client, client_options
from scheduler.cli.output import json_option, show_record, stale_line

HEALTH_ORDER = ("url", "role", "epoch", "version", "state_store", "jobs", "jobs_paused",
                "runs_running", "runs_failed_24h", "definitions")


def _counts(client: Client) -> dict[str, Any]:
    listing = client.get_json("/v1/jobs")
    jobs = listing.get("jobs", [])
    running = client.get_json("/v1/runs", {"state": "running", "limit": 10_000}).get("runs", [])
    day_ago = (datetime.now(UTC) - timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    failed = client.get_json(
        "/v1/runs", {"state": "failed", "since": day_ago, "limit": 10_000}
    ).get("runs", [])
    return {
        "jobs_paused": sum(1 for j in jobs if j.get("paused")),
        "runs_running": len(running),
        "runs_failed_24h": len(failed),
        "definitions": stale_line(listing.get("definitions")) or "current",
    }


@click.command("status")
@client_options
@json_option
def status(client: Client, as_json: bool) -> None:
    """Show the scheduler's role, epoch, state store and counts of jobs and runs.

    Without a token only the public health answer is shown.

    Example: hasched status --url http://127.0.0.1:8480
    """
    answer: dict[str, Any] = {"url": client.settings.url}
    answer.update(client.get_json("/health", auth=False))
    if client.settings.token:
        answer.update(_counts(client))
    show_record(answer, HEALTH_ORDER, as_json)
