import pytest

from scheduler.protocol import DispatchOrder, ProtocolError

pytestmark = pytest.mark.unit

ORDER = {"run_id": "hello@2026-12-01T02:30:00Z", "job": "hello", "attempt": 1, "epoch": 1,
         "command": ["true"]}


def test_an_order_takes_the_job_names_a_job_file_takes():
    assert DispatchOrder.from_json(ORDER).job == "hello"


@pytest.mark.parametrize("name", ["hello\n", "bad job", "-dash", "x" * 129])
def test_an_order_refuses_a_job_name_no_job_file_may_have(name):
    # The agent's pattern had ^...$ and match(): '$' matches before a final newline.
    with pytest.raises(ProtocolError, match="field 'job': must match"):
        DispatchOrder.from_json({**ORDER, "job": name})
