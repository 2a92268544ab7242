"""The daemons' log lines: every line, the libraries' too, starts with its UTC time."""

from __future__ import annotations

import logging
import re
import warnings

import pytest

from scheduler.logs import setup_logging
from scheduler.times import log_line

pytestmark = pytest.mark.unit

LINE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z (INFO|WARNING|ERROR) \S+: \S")


@pytest.fixture
def restore_logging():
    root, ours = logging.getLogger(), logging.getLogger("hasched")
    saved = (root.handlers[:], ours.handlers[:], ours.level, ours.propagate)
    yield
    root.handlers[:], ours.handlers[:] = saved[0], saved[1]
    ours.setLevel(saved[2])
    ours.propagate = saved[3]
    logging.captureWarnings(False)


def test_library_warnings_and_errors_carry_the_time_too(capsys, restore_logging) -> None:
    setup_logging("info")
    setup_logging("info")  # a second setup does not print each line twice
    logging.getLogger("hasched.scheduler").info("term: promotion to epoch 2 asked")
    logging.getLogger("asyncio").error("Task exception was never retrieved")
    logging.getLogger("aiohttp.server").warning("Error handling request")
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.warn("deprecated", DeprecationWarning, stacklevel=1)
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 4 and all(LINE.match(line) for line in lines), lines
    assert lines[1].endswith(" ERROR asyncio: Task exception was never retrieved")


def test_a_supervisors_own_line_has_the_daemons_format() -> None:
    assert LINE.match(log_line("WARNING", "hasched.supervisor", "x: claimed"))
