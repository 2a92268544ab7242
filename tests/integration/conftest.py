"""The integration tests' fixtures; the processes and helpers they use are in harness.py."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from harness import Agent, Lab


@pytest.fixture
def lab(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Lab]:
    """Agents and schedulers of one test; their logs are printed when it fails."""
    the_lab = Lab(tmp_path)
    yield the_lab
    rep = getattr(request.node, "rep_call", None)
    if rep is not None and rep.failed:
        print(the_lab.logs())
    the_lab.teardown()


@pytest.fixture
def agent_factory(tmp_path: Path) -> Iterator[Callable[..., Agent]]:
    """make(**settings): a started agent of its own (settings as for harness.Agent)."""
    agents: list[Agent] = []

    def make(**settings: str | None) -> Agent:
        a = Agent(tmp_path / f"agent{len(agents)}", **settings)
        agents.append(a)
        return a.start()

    yield make
    for a in agents:
        a.cleanup()


@pytest.fixture
def agent(agent_factory: Callable[..., Agent]) -> Agent:
    return agent_factory()


@pytest.fixture(scope="module")
def shared_agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Agent]:
    """One agent for the tests of a module that do not restart it (starting one costs ~1 s)."""
    a = Agent(tmp_path_factory.mktemp("agent"), output_limit='"4KiB"')
    a.start()
    yield a
    a.cleanup()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[Any]) -> Iterator[None]:
    outcome = yield
    rep = outcome.get_result()
    if rep.when == "call":
        item.rep_call = rep  # type: ignore[attr-defined]
