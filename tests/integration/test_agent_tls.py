"""The agent API over TLS: a client that trusts the agent's certificate talks to it; one that
does not is refused before any order is read."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from harness import (
    DEADLINE,
    Agent,
    order,
    run_async,
    wait_final,
)

from scheduler.protocol import AgentUnreachable

pytestmark = pytest.mark.integration


def self_signed(directory: Path) -> tuple[Path, Path]:
    cert, key = directory / "agent.crt", directory / "agent.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "2",
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True, timeout=DEADLINE,
    )
    return cert, key


def test_tls_with_a_trusted_ca(
    agent_factory: Callable[..., Agent], tmp_path: Path
) -> None:
    cert, key = self_signed(tmp_path)
    agent = agent_factory(tls=f'{{ cert = "{cert}", key = "{key}" }}')
    assert agent.url.startswith("https://")

    async def body() -> None:
        trusting = agent.client(ca=str(cert))
        assert (await trusting.health())["name"] == "t1"
        await trusting.dispatch(order("tls@1", ["echo", "secret channel"]))
        assert (await wait_final(trusting, "tls@1"))["state"] == "succeeded"
        assert await trusting.output("tls@1", 1) == "secret channel\n"
        await trusting.close()

        untrusting = agent.client()  # system CAs only: the self-signed cert is refused
        with pytest.raises(AgentUnreachable) as e:
            await untrusting.health()
        assert "\n" not in str(e.value)
        await untrusting.close()

    run_async(body)
